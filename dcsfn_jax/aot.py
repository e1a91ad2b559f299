r"""Compiles the commands' programs for TPUs and GPUs this host does not have.

  python -m dcsfn_jax.aot --config configs/rain100h.py --target v5e-8 \
      --target h100x8 [--dtype float32 --dtype bfloat16] [--output DIR]

For each --target (a TPU slice such as v5e-8, or an 8-GPU host such as
h100x8; --help lists them) it compiles, with XLA's compiler for that
hardware and compile-only devices (no accelerator is used or needed):
  train     the trainer's step: its real state, batch sharding and 'auto'
            remat choice for the target, at --config.batch_size;
  evaluate  the evaluator's forward at 321x481, one image per device;
  derain    derain's forward on one 1024x1024 photo.
It prints one row per program: compile time, per-device argument,
temporary and output memory against the device's HBM, the remat choice, the
largest per-device batch found to fit by compiling (--batch_search), the
collectives (kind, count, bytes), flops and bytes accessed, and a ROOFLINE
ESTIMATE of the step time from the device's published peak flop/s and HBM
bandwidth; on GPU, the kernels per step. --output DIR also writes
DIR/aot.md and DIR/aot.json (over earlier ones only with --overwrite).

TPU targets need the tpu extra (libtpu), GPU targets the cuda12 extra with
JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 on a host without a GPU; a target the
installed libraries cannot describe is one line of the table. A compile
takes minutes on a CPU host. libtpu's own messages go to DIR/libtpu.log
with --output, else nowhere.
"""
import datetime
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dcsfn_jax import cli
from dcsfn_jax import paths
from dcsfn_jax.compilation import programs
from dcsfn_jax.compilation import report
from dcsfn_jax.compilation import targets
from dcsfn_jax.training import config as config_lib

FILES = {'aot.md': '# Ahead-of-time compiles', 'aot.json': '{\n "command": '}


def _define_flags():
  config_flags.DEFINE_config_file(
      'config', None, 'Training config file, optionally with a variant: '
      'configs/rain100h.py:paper. Override fields with --config.FIELD=VALUE.',
      lock_config=True)
  flags.DEFINE_multi_string('target', None, targets.HELP)
  flags.DEFINE_multi_enum('program', list(programs.PROGRAMS),
                          list(programs.PROGRAMS),
                          'Programs to compile (repeatable).')
  flags.DEFINE_multi_enum('dtype', None, ['float32', 'bfloat16'],
                          "Compute dtype(s) (repeatable; default: the "
                          "config's model.dtype).")
  flags.DEFINE_bool('batch_search', True, 'Find the largest per-device '
                    'training batch that fits by compiling (up to 3 more '
                    'compiles of the step per target).')
  flags.DEFINE_string('output', None, 'Directory for aot.md and aot.json '
                      '(default: print only).')
  flags.DEFINE_bool('overwrite', False, 'Replace aot.md and aot.json of an '
                    'earlier run in --output.')
  flags.mark_flags_as_required(['config', 'target'])
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  f = flags.FLAGS
  cli.errors_only_logging()
  output = paths.expand(f.output)
  try:
    config = cli.loaded_config('configs/rain100h.py')
    config_lib.validate(config)
    for name in f.target:
      targets.get(name)
    if output:
      paths.check_text_outputs(output, f.overwrite, FILES)
      os.makedirs(output, exist_ok=True)
  except (ValueError, OSError) as error:
    sys.exit(f'error: {error}')
  log_path = os.path.join(output, 'libtpu.log') if output else None
  rows = []
  for dtype in f.dtype or [config.model.dtype]:
    dtype_config = report.with_dtype(config, dtype)
    for name in f.target:
      for row in report.compile_target(
          dtype_config, name, programs_to_run=f.program,
          batch_search=f.batch_search, log_path=log_path):
        rows.append(row)
        print(report.table([row])[-1], flush=True)
  print('\n'.join(report.table(rows)))
  print('Step times are roofline ESTIMATES from published peak figures, '
        'not measurements.')
  if output:
    command = 'python -m dcsfn_jax.aot ' + ' '.join(sys.argv[1:])
    date = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y-%m-%d %H:%M UTC')
    mode = 'w' if f.overwrite else 'x'
    markdown = (f'{FILES["aot.md"]}\n\n`{command}` ({date})\n\n'
                + report.markdown(rows, 'Results'))
    with open(os.path.join(output, 'aot.md'), mode, encoding='utf-8') as file:
      file.write(markdown)
    with open(os.path.join(output, 'aot.json'), mode,
              encoding='utf-8') as file:
      file.write(json.dumps({'command': command, 'date': date, 'rows': rows},
                            indent=1) + '\n')
    print(f'Wrote {os.path.join(output, "aot.md")} and aot.json.')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
