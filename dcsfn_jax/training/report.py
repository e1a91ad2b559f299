"""What a run tells people at its end: a short table of its figures and of
where its files are, and WORKDIR/curves.png (loss, eval PSNR and learning
rate against the step), both drawn from metrics.jsonl so that a rerun of a
finished run shows the same."""
import os

from PIL import Image
from PIL import ImageDraw

from dcsfn_jax import checkpointing
from dcsfn_jax.training import writer

CURVES_NAME = 'curves.png'
_CURVES = (('train/loss', 'training loss'),
           ('eval/psnr', 'eval PSNR (dB)'),
           ('train/learning_rate', 'learning rate'))
_WIDTH, _PANEL_HEIGHT, _MARGIN = 640, 180, 56


def last_eval(workdir):
  """The newest eval's figures in metrics.jsonl, as `train_and_evaluate`
  returns them ({'psnr', 'ssim', ...}); {} before any eval."""
  evals = [record for record in writer.read_metrics(workdir)
           if 'eval/psnr' in record]
  if not evals:
    return {}
  return {name[len('eval/'):]: value for name, value in evals[-1].items()
          if name.startswith('eval/')}


def _series(records, name):
  return [(record['step'], record[name]) for record in records
          if name in record]


def _draw_panel(draw, top, title, points):
  """One curve in the band [top, top + _PANEL_HEIGHT): axes, the values'
  range on the left, the steps' range below."""
  left, right = _MARGIN + 24, _WIDTH - 16
  bottom = top + _PANEL_HEIGHT - 36
  draw.text((left, top + 4), title, fill='black')
  draw.rectangle((left, top + 20, right, bottom), outline='gray')
  if not points:
    draw.text((left + 8, top + 28), 'no values yet', fill='gray')
    return
  steps = [step for step, _ in points]
  values = [value for _, value in points]
  low, high = min(values), max(values)
  first, last = min(steps), max(steps)

  def position(step, value):
    x = left + (right - left) * ((step - first) / ((last - first) or 1))
    y = bottom - (bottom - top - 20) * ((value - low) / ((high - low) or 1))
    return x, y

  xy = [position(step, value) for step, value in points]
  if len(xy) == 1:
    x, y = xy[0]
    draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill='navy')
  else:
    draw.line(xy, fill='navy', width=2)
  draw.text((4, top + 20), f'{high:.4g}', fill='black')
  draw.text((4, bottom - 12), f'{low:.4g}', fill='black')
  draw.text((left, bottom + 4), f'step {first}', fill='black')
  draw.text((right - 72, bottom + 4), f'step {last}', fill='black')


def write_curves(workdir):
  """Draws metrics.jsonl's curves into WORKDIR/curves.png; returns its
  path."""
  records = writer.read_metrics(workdir)
  image = Image.new('RGB', (_WIDTH, _PANEL_HEIGHT * len(_CURVES)), 'white')
  draw = ImageDraw.Draw(image)
  for index, (name, title) in enumerate(_CURVES):
    _draw_panel(draw, index * _PANEL_HEIGHT, title, _series(records, name))
  path = workdir / CURVES_NAME
  with path.open('wb') as file:
    image.save(file, format='PNG')
  return path


def closing_table(workdir, result):
  """Lines that end a run: the figures of `result` (`train_and_evaluate`'s)
  and where the checkpoints, panels, metrics, curves and TensorBoard logs
  are."""
  lines = [f'Run at step {result["step"]} in {workdir}']
  if 'psnr' in result:
    figures = (f'PSNR {result["psnr"]:.2f} dB, SSIM {result["ssim"]:.4f}; '
               f'rainy inputs {result["input_psnr"]:.2f} dB, '
               f'{result["input_ssim"]:.4f}')
    if 'ema_psnr' in result:
      figures += (f'; EMA {result["ema_psnr"]:.2f} dB, '
                  f'{result["ema_ssim"]:.4f}')
    lines.append(f'  eval, official protocol ({int(result["images"])} '
                 f'images): {figures}')
  steps_dir = workdir / checkpointing.CHECKPOINTS_SUBDIR
  steps = ', '.join(map(str, checkpointing.finished_steps(steps_dir)))
  rows = [('checkpoints', f'{steps_dir} (steps {steps})'),
          ('panels', workdir / 'panels'),
          ('metrics', workdir / 'metrics.jsonl'),
          ('curves', workdir / CURVES_NAME),
          ('TensorBoard', f'tensorboard --logdir {workdir / "tensorboard"} '
                          '(after pip install tensorboard)')]
  lines += [f'  {name:<12} {os.fspath(where)}' for name, where in rows]
  return lines
