"""What a run writes for people: metrics.jsonl, TensorBoard, eval panels and
its progress on the console.

Only process 0 writes. The workdir may be an epath.Path to an object store
(gs://), where files cannot be appended to: metrics.jsonl is kept in memory
and rewritten whole at each write, through a temporary file and a rename, so
a kill mid-write never truncates it. A resumed run keeps the lines of the
steps its checkpoint holds and drops those of the steps it is about to redo.
"""
import json
import logging as std_logging
import os
import sys

from absl import logging
import jax
from PIL import Image
import tqdm

from dcsfn_jax.images import files as image_files


def _import_tensorboardx():
  """tensorboardX, imported as if PyTorch were absent.

  tensorboardX imports torch whenever it is installed (the [torch] and test
  extras install it), which costs a train process seconds of start-up for
  nothing: the writer only ever passes it floats and numpy arrays.
  """
  if 'torch' in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules['torch'] = None  # `import torch` raises ImportError meanwhile.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()


class MetricsFileError(ValueError):
  """metrics.jsonl holds a line that is not a JSON object with a step."""


def read_metrics(workdir):
  """metrics.jsonl's records as dicts, oldest first ([] without the file).

  Raises:
    MetricsFileError: naming the file and line that is not a JSON object with
      an integer 'step'.
  """
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return []
  records = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (ValueError, RecursionError):
      record = None
    if not isinstance(record, dict) or not isinstance(record.get('step'), int):
      raise MetricsFileError(
          f'{path} line {number} is not a JSON object with a step; move the '
          'file away (the run then starts a new one) or repair that line.')
    records.append(record)
  return records


class MetricWriter:
  """Scalars to metrics.jsonl and TensorBoard; panels to panels/ and TB."""

  def __init__(self, workdir, start_step):
    """Args:
      workdir: an epath.Path (local or a URL).
      start_step: the step the run resumes after (0 for a fresh run).
    """
    self._active = jax.process_index() == 0
    self._workdir = workdir
    self._jsonl = workdir / 'metrics.jsonl'
    if self._active:
      self._lines = []
      self._lines = [json.dumps(record) + '\n'
                     for record in read_metrics(workdir)
                     if record['step'] <= start_step]
      self._writer = tensorboardX.SummaryWriter(
          os.fspath(workdir / 'tensorboard'))

  def scalars(self, step, values):
    """values: {name: float} logged at `step`."""
    if not self._active:
      return
    for name, value in values.items():
      self._writer.add_scalar(name, value, step)
    self._lines.append(json.dumps({'step': step, **values}) + '\n')
    partial = self._jsonl.with_name(self._jsonl.name + '.tmp')
    partial.write_text(''.join(self._lines))
    partial.replace(self._jsonl)

  def panels(self, step, panels):
    """panels: [(example name, uint8 [H, W, 3])] -> panels/stepN_NAME.png."""
    if not self._active or not panels:
      return
    folder = self._workdir / 'panels'
    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, panel) in enumerate(panels):
      stem = image_files.output_name(name)[:-len('.png')]
      with (folder / f'step{step:07d}_{stem}.png').open('wb') as file:
        Image.fromarray(panel).save(file, format='PNG')
      self._writer.add_image(f'eval/panel_{index}', panel, step,
                             dataformats='HWC')
    self._writer.flush()

  def close(self):
    if self._active:
      self._writer.close()


class Progress:
  """The run's progress on process 0: a bar on a terminal; elsewhere (a log
  file, a pipe) one plain line per logged window, since a bar redrawn at
  every step fills a file with escape codes."""

  def __init__(self, total_steps, start_step):
    self._active = jax.process_index() == 0
    self._total_steps = total_steps
    self._bar = None
    if self._active and sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=total_steps, initial=start_step,
                            unit='step', desc='train', dynamic_ncols=True)

  def update(self, step, step_metrics):
    """Advances the bar to `step` (of `total_steps`)."""
    del step
    if self._bar is not None:
      self._bar.update(1)
      self._bar.set_postfix(loss=f'{step_metrics["loss"]:.4f}',
                            lr=f'{step_metrics["learning_rate"]:.1e}')

  def log(self, step, summary):
    """One line of a window's means (`MetricWriter.scalars`' values) where
    no bar shows them."""
    if self._active and self._bar is None:
      print(f'step {step}/{self._total_steps}: loss '
            f'{summary["train/loss"]:.4f}, lr '
            f'{summary["train/learning_rate"]:.1e}, '
            f'{summary["train/steps_per_second"]:.2f} steps/s',
            file=sys.stderr, flush=True)

  def write(self, line):
    """Prints `line` to stdout (above the bar, if one shows)."""
    if not self._active:
      return
    if self._bar is not None:
      self._bar.write(line)
    else:
      print(line, flush=True)

  def close(self):
    if self._bar is not None:
      self._bar.close()


class _HideOrbaxChatter(std_logging.Filter):
  """Drops orbax's INFO lines (about 30 per save), its warning that a save
  without eval metrics cannot be ranked (how every periodic save between
  evals is meant to be), and its error reports with tracebacks from the
  writer threads, including asyncio's "Task exception was never retrieved"
  for orbax's tasks: a failed save reaches the caller as one
  `checkpointing.SaveError`."""

  def filter(self, record):
    if record.name == 'asyncio' and (f'{os.sep}orbax{os.sep}'
                                     in record.getMessage()):
      return False
    if f'{os.sep}orbax{os.sep}' not in record.pathname:
      return True
    return (record.levelno == std_logging.WARNING
            and 'did not provide metrics' not in record.getMessage())


def _drop_closed_loop_reports(unraisable, default=sys.unraisablehook):
  """After a failed write, tensorstore still completes the other writes of
  that save into orbax's event loop, closed by then; each reports a
  RuntimeError that nothing can catch. The failure itself reaches the caller
  as `checkpointing.SaveError`."""
  if (isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == 'Event loop is closed'):
    return
  default(unraisable)


def quiet_orbax_logs():
  """Installs the filter on absl's handler, and drops orbax's reports from
  writer threads after a failed save (call once, in a command's main)."""
  logging.get_absl_handler().addFilter(_HideOrbaxChatter())
  sys.unraisablehook = _drop_closed_loop_reports
