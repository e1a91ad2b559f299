"""Runs a study's share: each (variant, seed) as its own
`python -m dcsfn_jax.train` process, claimed first, its output in
WORKDIR/logs/, one progress line for the study.

A child process per run reuses the trainer's lock, resume and signal
handling, and a run that crashes takes only itself down; the cost is the
start-up of each run, which JAX's persistent compilation cache
(`dcsfn_jax.compile_cache`, on by default) cuts for a variant's later seeds.
Children run in their own session, so a terminal's Ctrl-C reaches only this
process, which passes one SIGINT on: the trainer saves its step and stops,
the claim is released, and the same command resumes. Under SLURM the child
may also receive the scheduler's SIGTERM itself: SIGINT is another kind of
signal, so the two together still stop it cleanly.
"""
import hashlib
import signal
import subprocess
import sys
import time

from dcsfn_jax import data
from dcsfn_jax import paths
from dcsfn_jax.studies import claims as claims_lib
from dcsfn_jax.studies import runs as runs_lib
from dcsfn_jax.studies import spec as spec_lib

POLL_SECONDS = 1.0


class Stopped(Exception):
  """The study stopped on a signal; `exit_code` is 128 + the signal."""

  def __init__(self, signum):
    super().__init__(f'stopped by {signal.Signals(signum).name}; the same '
                     'command resumes the study')
    self.exit_code = 128 + signum


def check_data(study, share, workdir=None, task_index=0):
  """Raises StudyError with train's own message when a dataset of the share
  is not prepared. Where a config asks for it (prepare_data), builds
  synthetic_rain first, once: the process that claims the build makes it
  (WORKDIR/claims/prepare.DATASET-HASH.json), the others wait for it."""
  seen = set()
  for variant in study.variants:
    if variant.name not in {run.variant for run in share}:
      continue
    config = variant.config
    key = (config.dataset, config.data_dir, config.train_split)
    if key in seen:
      continue
    seen.add(key)
    data_dir = paths.expand(config.data_dir) or None
    while not _prepared(variant, data_dir):
      if workdir is None:
        _prepare(config, data_dir)
        break
      folder = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
      claim = claims_lib.take(workdir, f'prepare/{config.dataset}-{folder}',
                              task_index)
      build = claims_lib.read(claims_lib.path_of(
          workdir, f'prepare/{config.dataset}-{folder}'))
      if claim is not None or (build or {}).get('state') == 'done':
        # Ours to build, or built where this host does not see it (a
        # node-local data_dir).
        _prepare(config, data_dir)
        if claim is not None:
          claim.finish('done', 'done')
        break
      time.sleep(POLL_SECONDS)


def _prepared(variant, data_dir):
  config = variant.config
  try:
    data.load_split(config.dataset, config.train_split, data_dir)
  except data.DatasetNotPreparedError as error:
    if not config.prepare_data:
      raise spec_lib.StudyError(str(error)) from None
    return False
  except ValueError as error:
    raise spec_lib.StudyError(f"variant '{variant.name}': {error}") from None
  return True


def _prepare(config, data_dir):
  print(f'Preparing {config.dataset} in '
        f'{config.data_dir or "the default data_dir"}...', flush=True)
  data.prepare(config.dataset, data_dir=data_dir)


class _Signals:
  """Records SIGINT/SIGTERM and passes each on to the running child as
  SIGINT."""

  def __init__(self):
    self.signum = None
    self.child = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGINT)

  def __enter__(self):
    for signum in (signal.SIGINT, signal.SIGTERM):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _duration(seconds):
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """The study's one progress line: done, failed, left; the run in hand
  and its step; an ETA for this process's share from the runs finished so
  far (this process's, else any recorded in the claims)."""

  def __init__(self, study, workdir, share, out=None):
    self._study, self._workdir, self._share = study, workdir, share
    self._out = out or sys.stdout
    self._tty = self._out.isatty()
    self._durations = []
    self._last = ''

  def finished(self, seconds):
    self._durations.append(seconds)

  def line(self, current=None, step=None):
    everything = runs_lib.all_runs(self._study)
    states = [runs_lib.status(self._workdir, run) for run in everything]
    done = sum(s.state == 'done' for s in states)
    failed = sum(s.state == 'failed' for s in states)
    left_here = sum(runs_lib.status(self._workdir, run).state
                    not in ('done', 'failed') for run in self._share)
    durations = self._durations or [
        a['seconds'] for s in states if s.state == 'done'
        for a in s.attempts if a.get('outcome') == 'done']
    text = (f'[{self._study.name}] {done}/{len(everything)} done, '
            f'{failed} failed, {len(everything) - done - failed} left')
    if len(self._share) != len(everything):
      text += f' ({left_here} in this share)'
    if current is not None:
      text += f'; training {current.name}'
      if step:
        text += f' step {step[0]}/{step[1]}'
    if durations and left_here:
      fraction = step[0] / step[1] if step and step[1] else 0.0
      eta = sum(durations) / len(durations) * max(left_here - fraction, 0)
      text += f'; ETA {_duration(eta)}'
    return text

  def show(self, current=None, step=None, final=False):
    text = self.line(current, step)
    if self._tty:
      self._out.write('\r' + text.ljust(len(self._last)) +
                      ('\n' if final else ''))
    elif text != self._last and (final or current is None or step is None):
      self._out.write(text + '\n')
    self._out.flush()
    self._last = '' if final else text


def _failure_reason(log, offset, returncode):
  """The child's `error:` line (with the lines indented under it), else its
  exit code or signal."""
  with log.open('rb') as file:
    file.seek(offset)
    lines = file.read().decode(errors='replace').splitlines()
  for index in range(len(lines) - 1, -1, -1):
    if lines[index].startswith('error: '):
      more = [line.strip() for line in lines[index + 1:index + 4]
              if line.startswith('  ')]
      return ' '.join([lines[index][len('error: '):], *more])
  if returncode < 0:
    return f'killed by {signal.Signals(-returncode).name}'
  return f'exit code {returncode} (see {log})'


def _command(args, compile_cache):
  command = [sys.executable, '-m', *args]
  if compile_cache:
    command.append(f'--compile_cache={compile_cache}')
  return command


def _run_child(command, log, claim, signals, progress, current):
  """Runs `command` with its output appended to `log`, beating the claim;
  (returncode, output offset, whether the claim was lost)."""
  log.parent.mkdir(parents=True, exist_ok=True)
  with log.open('a') as output:
    output.write(f'\n=== {time.strftime("%Y-%m-%d %H:%M:%S")} '
                 f'{" ".join(command)}\n')
    output.flush()
    offset = output.tell()
    child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL,
                             start_new_session=True)
  signals.child = child
  lost = False
  try:
    claim.beat(child.pid, force=True)
    while child.poll() is None:
      time.sleep(POLL_SECONDS)
      if not lost and not claim.beat():
        lost = True
        child.send_signal(signal.SIGINT)
      step = runs_lib.last_progress(log)
      progress.show(current, step)
  except BaseException:
    # Never leave a trainer behind: it saves its step and stops.
    if child.poll() is None:
      child.send_signal(signal.SIGINT)
      child.wait()
    raise
  finally:
    signals.child = None
  return child.returncode, offset, lost


def run_one(study, workdir, run, claim, signals, progress, compile_cache):
  """Trains one claimed run (and evaluates it under the study's other
  protocols); records the outcome in its claim. Returns its state."""
  variant = study.variant(run.name.split('/')[0])
  run_dir = runs_lib.folder(workdir, run)
  log = runs_lib.log_path(workdir, run)
  started = time.time()
  commands = [_command(['dcsfn_jax.train', *variant.train_args(run.seed),
                        f'--workdir={run_dir}'], compile_cache)]
  others = [p for p in study.protocols if p != 'official']
  if others:
    commands.append(_command(
        ['dcsfn_jax.evaluate', f'--workdir={run_dir}', '--weights=raw',
         f'--protocol={",".join(others)}', '--nopanels', '--overwrite',
         f'--output={runs_lib.evaluation_summary(run_dir).parent}'],
        compile_cache))
  for command in commands:
    returncode, offset, lost = _run_child(command, log, claim, signals,
                                          progress, run)
    step = runs_lib.last_progress(log)
    step = step[0] if step else None
    if signals.signum is not None or lost or returncode in (130, 143):
      claim.finish('released', 'interrupted', 'stopped by a signal', step)
      return 'released'
    if returncode != 0:
      reason = _failure_reason(log, offset, returncode)
      claim.finish('failed', 'failed', reason, step)
      return 'failed'
  result = runs_lib.final_figures(workdir, run, study.protocols)
  claim.finish('done', 'done', step=result['step'], result=result)
  progress.finished(time.time() - started)
  return 'done'


def run_share(study, workdir, share, task_index, compile_cache=None,
              retry_failed=False):
  """Trains every run of `share` not finished or held by another process.

  Returns:
    {'done': [...], 'failed': [...], 'skipped': [...]} run names handled by
    this call. Raises `Stopped` after a signal (the run in hand released).
  """
  progress = Progress(study, workdir, share)
  outcome = {'done': [], 'failed': [], 'skipped': []}
  with _Signals() as signals:
    progress.show()
    for run in share:
      if signals.signum is not None:
        break
      state = runs_lib.status(workdir, run).state
      if state == 'done' or (state == 'failed' and not retry_failed):
        continue
      if state == 'failed':
        _release_failed(workdir, run)
      claim = claims_lib.take(workdir, run.name, task_index)
      if claim is None:
        outcome['skipped'].append(run.name)
        continue
      state = run_one(study, workdir, run, claim, signals, progress,
                      compile_cache)
      if state in outcome:
        outcome[state].append(run.name)
      progress.show()
    progress.show(final=True)
    if signals.signum is not None:
      raise Stopped(signals.signum)
  return outcome


def _release_failed(workdir, run):
  """Marks a failed run's claim released, so that --retry_failed can take
  it through the usual takeover."""
  path = claims_lib.path_of(workdir, run.name)
  claim = claims_lib.read(path)
  if claim and claim.get('state') == 'failed':
    claim['state'] = 'released'
    claims_lib.replace(path, claim)


def workdir_path(workdir, create=True):
  """The study's workdir as a path (local or URL), created unless not
  `create`."""
  from dcsfn_jax import checkpointing  # pylint: disable=g-import-not-at-top
  path = checkpointing.as_path(paths.expand(workdir))
  if path.exists() and not path.is_dir():
    raise spec_lib.StudyError(f'--workdir {workdir} is a file; choose a '
                              'folder for the study.')
  if create:
    path.mkdir(parents=True, exist_ok=True)
  return path
