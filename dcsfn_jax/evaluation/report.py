"""What an evaluation leaves on disk: tables a person reads, images to look at.

  per_image.csv   every image's size and metrics under each protocol
  summary.json    means, protocol definitions, checkpoint and settings
  results.md      a Markdown table naming each protocol
  derained/*.png  outputs rounded to uint8 (what y_uint8 scores)
  panels/*.png    rainy | derained | clean | error map
"""
import csv
import json
import os

from dcsfn_jax import metrics
from dcsfn_jax.evaluation import images

_PER_IMAGE = ('psnr', 'ssim', 'psnr_rainy', 'ssim_rainy')


def markdown_table(summary, title):
  """The summary's means as a Markdown table, one row per protocol."""
  shapes = ('native sizes' if not summary['bucket'] else
            f"padded to shape buckets {', '.join(summary['shapes'])} "
            '(--bucket: outputs differ from native sizes)')
  lines = [f'### {title}', '', f"{summary['num_images']} images, {shapes}.",
           '',
           '| protocol | PSNR (dB) | SSIM | rainy input PSNR / SSIM '
           '| definition |',
           '| --- | ---: | ---: | ---: | --- |']
  means = summary['means']
  for protocol, description in summary['protocols'].items():
    lines.append(f"| {protocol} | {means[protocol + '/psnr']:.4f} "
                 f"| {means[protocol + '/ssim']:.4f} "
                 f"| {means[protocol + '/psnr_rainy']:.2f} / "
                 f"{means[protocol + '/ssim_rainy']:.4f} "
                 f'| {description} |')
  return '\n'.join(lines) + '\n'


def write_report(output_dir, rows, summary, title):
  """Writes per_image.csv, summary.json and results.md into output_dir."""
  protocols = list(summary['protocols'])
  columns = ['name', 'height', 'width', 'shape'] + [
      f'{p}/{m}' for p in protocols for m in _PER_IMAGE]
  with open(os.path.join(output_dir, 'per_image.csv'), 'w',
            newline='') as file:
    writer = csv.DictWriter(file, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v)
                       for k, v in row.items()})
  with open(os.path.join(output_dir, 'summary.json'), 'w') as file:
    json.dump(summary, file, indent=2, default=str)
  with open(os.path.join(output_dir, 'results.md'), 'w') as file:
    file.write(markdown_table(summary, title))


class ImageWriter:
  """Writes each `evaluator.Scored` image: derained/NAME.png and, with
  panels, panels/NAME.png. Names are flattened and kept distinct."""

  def __init__(self, output_dir, *, panels=True):
    self._derained = os.path.join(output_dir, 'derained')
    self._panels = os.path.join(output_dir, 'panels') if panels else None
    self._taken = set()

  def __call__(self, scored):
    os.makedirs(self._derained, exist_ok=True)
    name = images.output_name(scored.name)
    stem, count = name[:-len('.png')], 1
    while name.lower() in self._taken:
      count += 1
      name = f'{stem}_{count}.png'
    self._taken.add(name.lower())
    derained = metrics.to_uint8(scored.derained)
    images.write_png(os.path.join(self._derained, name), derained)
    if self._panels is not None:
      os.makedirs(self._panels, exist_ok=True)
      images.write_png(os.path.join(self._panels, name),
                       images.evaluation_panel(scored.rainy, derained,
                                               scored.clean))
