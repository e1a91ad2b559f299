r"""Trains DCSFN with the released recipe, from one CPU to many hosts.

  python -m dcsfn_jax.train --config configs/demo.py --workdir /tmp/demo
  python -m dcsfn_jax.train --config configs/rain100h.py:paper \
      --workdir runs/rain100h_paper --config.batch_size=16

Every field of the config can be overridden with --config.FIELD=VALUE; the
fields, their defaults and meanings are in dcsfn_jax/training/config.py
(`base_config`). The run resumes by itself from the newest checkpoint in
--workdir (see `dcsfn_jax.training.trainer`), and holds --workdir alone
(WORKDIR/train.lock). SIGTERM or Ctrl-C saves the current step and exits
128 + the signal; the same command resumes. At the end it prints its figures
and where its files are.
"""
import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from dcsfn_jax import checkpointing
from dcsfn_jax import cli
from dcsfn_jax import compile_cache
from dcsfn_jax import data
from dcsfn_jax import parallel
from dcsfn_jax import paths
from dcsfn_jax.training import config as config_lib
from dcsfn_jax.training import report
from dcsfn_jax.training import stopping
from dcsfn_jax.training import trainer
from dcsfn_jax.training import writer


def _define_flags():
  cli.define_compile_cache_flag()
  config_flags.DEFINE_config_file(
      'config', None, 'Training config file, optionally with a variant: '
      'configs/rain100h.py:paper. Override fields with --config.FIELD=VALUE; '
      'the fields and their defaults are listed in '
      'dcsfn_jax/training/config.py (base_config).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Folder (or URL, e.g. gs://bucket/run) '
                      'for checkpoints, logs and panels; a run resumes from '
                      'the newest checkpoint found here.')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 '
                      'for a multi-process run (default '
                      '$JAX_COORDINATOR_ADDRESS, or SLURM/TPU detection).')
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process '
                       'run (default $JAX_NUM_PROCESSES).')
  flags.DEFINE_integer('process_id', None, 'This process, '
                       '0..num_processes-1 (default $JAX_PROCESS_ID).')
  flags.mark_flags_as_required(['config', 'workdir'])
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help


def _explain(argv, error):
  """A did-you-mean for a misspelt --config field; a pointer for a missing
  config file."""
  del error
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      try:
        config_lib.check_override(arg[len('--config.'):].split('=')[0])
      except config_lib.ConfigError as config_error:
        return str(config_error)
  return None


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  compile_cache.enable(flags.FLAGS.compile_cache)  # before any compile
  config = cli.loaded_config()
  writer.quiet_orbax_logs()
  try:
    config_lib.validate(config)
    parallel.use_host_cores(config.batch_size)
    parallel.initialize_distributed(flags.FLAGS.coordinator_address,
                                    flags.FLAGS.num_processes,
                                    flags.FLAGS.process_id)
    result = trainer.train_and_evaluate(config, flags.FLAGS.workdir)
  except (config_lib.ConfigError, data.DatasetNotPreparedError,
          data.PrepareError, FloatingPointError,
          writer.MetricsFileError) as error:
    sys.exit(f'error: {error}')
  except checkpointing.SaveError as error:
    # orbax's writer threads may still wait on the failed save: leave
    # without joining them.
    print(f'error: {error}', file=sys.stderr, flush=True)
    os._exit(1)  # pylint: disable=protected-access
  except OSError as error:
    # What the run could not open otherwise, e.g. its TensorBoard file when
    # the workdir's path is near the system's limit.
    name = f'could not open {error.filename} ' if error.filename else ''
    sys.exit(f'error: {name}({error.strerror or error}).')
  except stopping.Interrupted as interrupted:
    print(interrupted, file=sys.stderr, flush=True)
    sys.exit(interrupted.exit_code)
  if jax.process_index() == 0:
    workdir = checkpointing.as_path(paths.expand(flags.FLAGS.workdir))
    print('\n'.join(report.closing_table(workdir, result)), flush=True)


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser(_explain))
