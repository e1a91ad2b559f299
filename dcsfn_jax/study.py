r"""Runs a study: variants x seeds of training runs, then a report of their
spread beside the published figures, with plots.

  python -m dcsfn_jax.study --study configs/studies/demo.py \
      --workdir /tmp/dcsfn_study
  python -m dcsfn_jax.study --study configs/studies/table5.py \
      --workdir runs/table5 --config.data_dir=~/tfds [--list]

Each (variant, seed) is an ordinary training run, WORKDIR/VARIANT/seed_N/,
trained by its own `python -m dcsfn_jax.train` process (its output in
WORKDIR/logs/); evaluate, derain, export and summary take it as any other
workdir. Finished runs are skipped and interrupted ones resume, so the same
command continues a study. --config.FIELD=VALUE applies to every variant
(e.g. --config.total_steps=2000 for a shortened study). Several processes
may share one workdir: --task_index/--num_tasks (default
$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) give each a share, and a
claim per run (WORKDIR/claims/, see dcsfn_jax/studies/claims.py) keeps any
two from training the same run. The end of every study, and --report_only,
write WORKDIR/study.md, study.csv, study.json and WORKDIR/plots/*.png; the
tables are also printed. The exit code is 1 when a run of this process
failed, 128 + N after signal N (the same command resumes).
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dcsfn_jax import cli
from dcsfn_jax.studies import report
from dcsfn_jax.studies import runner
from dcsfn_jax.studies import runs as runs_lib
from dcsfn_jax.studies import spec as spec_lib
from dcsfn_jax.training import config as config_lib


def _define_flags():
  cli.define_compile_cache_flag()
  config_flags.DEFINE_config_file(
      'study', None, 'Study file, e.g. configs/studies/table5.py; its fields '
      'are described in dcsfn_jax/studies/spec.py.', lock_config=False)
  config_flags.DEFINE_config_dict(
      'config', config_lib.base_config(), 'Overrides of the training config '
      'for every variant: --config.FIELD=VALUE (fields in '
      'dcsfn_jax/training/config.py, base_config).')
  flags.DEFINE_string('workdir', None, 'Folder (or URL) of the study: one '
                      'training workdir per run, the claims, logs and '
                      'report.')
  flags.DEFINE_bool('list', False, 'Print the runs and where each stands; '
                    'train nothing.')
  flags.DEFINE_bool('report_only', False, 'Write the report from the runs '
                    'finished so far; train nothing.')
  flags.DEFINE_bool('retry_failed', False, 'Train failed runs again (they '
                    'are otherwise reported as failed and skipped).')
  flags.DEFINE_integer('task_index', None, 'This process\'s share, '
                       '0..num_tasks-1 (default $SLURM_ARRAY_TASK_ID, '
                       'else 0).', lower_bound=0)
  flags.DEFINE_integer('num_tasks', None, 'Processes sharing the study '
                       '(default $SLURM_ARRAY_TASK_COUNT, else 1).',
                       lower_bound=1)
  flags.mark_flags_as_required(['study', 'workdir'])
  flags.adopt_module_key_flags(cli)


def _explain(argv, error):
  """A did-you-mean for a misspelt --config field."""
  del error
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      try:
        config_lib.check_override(arg[len('--config.'):].split('=')[0])
      except config_lib.ConfigError as config_error:
        return str(config_error)
  return None


def _command_overrides():
  """The --config.FIELD=VALUE words of the command line, in order (absl
  hands main() only the words it did not parse)."""
  words, args = [], sys.argv[1:]
  for index, arg in enumerate(args):
    if arg.startswith('--config.'):
      if '=' not in arg and index + 1 < len(args) and not args[
          index + 1].startswith('-'):
        arg = f'{arg}={args[index + 1]}'  # --config.FIELD VALUE
      words.append(arg)
  return tuple(words)


def _share_flags():
  """(task_index, num_tasks) from the flags, else SLURM's array variables."""
  task_index = flags.FLAGS.task_index
  num_tasks = flags.FLAGS.num_tasks
  if task_index is None:
    task_index = int(os.environ.get('SLURM_ARRAY_TASK_ID', 0))
  if num_tasks is None:
    num_tasks = int(os.environ.get('SLURM_ARRAY_TASK_COUNT', 1))
  if not 0 <= task_index < num_tasks:
    raise spec_lib.StudyError(
        f'--task_index={task_index} must be in 0..{num_tasks - 1} '
        f'(--num_tasks={num_tasks}).')
  return task_index, num_tasks


def _load_study():
  study_config = flags.FLAGS.study
  path = config_flags.get_config_filename(flags.FLAGS['study'])
  try:
    getattr(study_config, 'keys', None)
  except OSError:
    raise spec_lib.StudyError(
        f'--study {path} does not exist or does not load; the studies are '
        'in configs/studies/, e.g. configs/studies/demo.py.') from None
  return spec_lib.build(study_config, path, _command_overrides())


def _list(study, workdir, share):
  mine = set(share)
  print(f'{study.title}: {len(study.variants)} variants x '
        f'{len(study.seeds)} seeds in {workdir}')
  for run in runs_lib.all_runs(study):
    status = runs_lib.status(workdir, run)
    where = status.state
    if status.step and status.state != 'done':
      where += f' at step {status.step[0]}/{status.step[1]}'
    if status.state == 'done' and status.result:
      protocol = study.protocols[0]
      where += (f": {status.result.get(f'{protocol}/psnr', 0):.2f} dB, "
                f"{status.result.get(f'{protocol}/ssim', 0):.4f} "
                f'({protocol})')
    if status.state == 'failed':
      where += f': {status.reason}'
    holder = status.holder or {}
    if status.state in ('running', 'stalled'):
      where += (f" (process {holder.get('pid')} on {holder.get('host')}, "
                f"task {holder.get('task')})")
    share_mark = '' if run in mine else '  [another task]'
    print(f'  {run.name:<28} {where}{share_mark}')
    print(f'    {runs_lib.folder(workdir, run)}')


def _finish(study, workdir):
  content, plot_paths = report.write(study, workdir)
  print('\n'.join(report.tables(content)))
  print(f'\nReport: {workdir / "study.md"} (also study.csv, study.json); '
        f'plots: {", ".join(os.fspath(p) for p in plot_paths)}', flush=True)
  return content


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  cli.warnings_and_errors_logging()
  try:
    study = _load_study()
    task_index, num_tasks = _share_flags()
    share = runs_lib.share(runs_lib.all_runs(study), task_index, num_tasks)
    if flags.FLAGS.list:
      _list(study, runner.workdir_path(flags.FLAGS.workdir, create=False),
            share)
      return
    workdir = runner.workdir_path(flags.FLAGS.workdir)
    spec_lib.adopt(study, workdir)
    if flags.FLAGS.report_only:
      _finish(study, workdir)
      return
    runner.check_data(study, share, workdir, task_index)
    # The children enable the cache themselves ($DCSFN_COMPILE_CACHE or
    # the default folder) unless the flag names one.
    outcome = runner.run_share(study, workdir, share, task_index,
                               flags.FLAGS.compile_cache,
                               flags.FLAGS.retry_failed)
  except spec_lib.StudyError as error:
    sys.exit(f'error: {error}')
  except runner.Stopped as stopped:
    print(stopped, file=sys.stderr, flush=True)
    sys.exit(stopped.exit_code)
  _finish(study, workdir)
  if outcome['skipped']:
    print(f"{len(outcome['skipped'])} run(s) of this share are held by "
          f"other processes: {', '.join(outcome['skipped'])}.")
  if outcome['failed']:
    print(f"{len(outcome['failed'])} run(s) failed here: "
          f"{', '.join(outcome['failed'])}; see study.md (--retry_failed "
          'trains them again).', file=sys.stderr)
    sys.exit(1)


def _refuse_unknown_fields():
  """The --config.* flags are defined from the command line itself (the
  training config's fields it names), so a misspelt one fails there:
  refuse it first, with its did-you-mean."""
  message = _explain(sys.argv, None)
  if message:
    sys.exit(f'error: {message}')


if __name__ == '__main__':
  _refuse_unknown_fields()
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser(_explain))
