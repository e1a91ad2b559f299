"""What a run writes for people: metrics.jsonl, TensorBoard and eval panels.

Only process 0 writes. The workdir may be an epath.Path to an object store
(gs://), where files cannot be appended to: metrics.jsonl is kept in memory
and rewritten whole at each write, through a temporary file and a rename, so
a kill mid-write never truncates it. A resumed run keeps the lines of the
steps its checkpoint holds and drops those of the steps it is about to redo.
"""
import json
import logging as std_logging
import os

from absl import logging
import jax
from PIL import Image
import tensorboardX

from dcsfn_jax.images import files as image_files


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
      if self._jsonl.exists():
        self._lines = [line + '\n' for line in
                       self._jsonl.read_text().splitlines()
                       if line and json.loads(line)['step'] <= start_step]
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


class _HideOrbaxChatter(std_logging.Filter):
  """Drops orbax's INFO lines (about 30 per save) and its warning that a
  save without eval metrics cannot be ranked, which is how every periodic
  save between evals is meant to be."""

  def filter(self, record):
    if f'{os.sep}orbax{os.sep}' not in record.pathname:
      return True
    return (record.levelno >= std_logging.WARNING
            and 'did not provide metrics' not in record.getMessage())


def quiet_orbax_logs():
  """Installs the filter on absl's handler (call once, in a command's main)."""
  logging.get_absl_handler().addFilter(_HideOrbaxChatter())
