"""What an evaluation leaves on disk: tables a person reads, images to look at.

  per_image.csv   every image's size and metrics under each protocol
  summary.json    means, protocol definitions, checkpoint and settings
  results.md      a Markdown table naming each protocol, and the published
                  DCSFN figures for the same dataset, split and protocol
                  (dcsfn_jax/assets/published_results.json) with the gap
  derained/*.png  outputs rounded to uint8 (what y_uint8 scores)
  panels/*.png    rainy | derained | clean | error map

A summary with 'rainy_baseline': False (`score` without --rainy) has no
*_rainy metrics; its tables and per_image.csv leave those columns out.
--overwrite replaces only these files as this project wrote them
(`check_replaceable`, by `paths.refusal_to_replace`).
"""
import csv
import functools
import json
import os

from dcsfn_jax import metrics
from dcsfn_jax import paths
from dcsfn_jax.images import files as image_files
from dcsfn_jax.images import panels as image_panels

_PER_IMAGE = ('psnr', 'ssim', 'psnr_rainy', 'ssim_rainy')

# What each report file this module writes starts with: how --overwrite
# tells an earlier report from a user's file of the same name.
REPORT_FILES = {'per_image.csv': 'name,height,width,shape',
                'summary.json': '{\n  "num_images": ',
                'results.md': '### '}
IMAGE_FOLDERS = ('derained', 'panels')

# Up to this many images, the per-image table shows them all; above it the
# SHOWN_EXTREMES lowest and highest.
ALL_ROWS_UP_TO = 20
SHOWN_EXTREMES = 5

PUBLISHED_RESULTS = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                                 'assets', 'published_results.json')


@functools.lru_cache(maxsize=None)
def _published(path):
  with open(path) as file:
    return json.load(file)


def published_rows(dataset, split, protocol, model=None, *,
                   path=PUBLISHED_RESULTS):
  """Published PSNR/SSIM rows for (dataset, split, protocol), as dicts of
  published_results.json with their source's record under 'source_info'.

  Rows that describe a model variant ('model_config') are returned only when
  `model` (a summary's model config dict) has every one of its values.
  """
  published = _published(os.fspath(path))
  found = []
  for row in published['rows']:
    if (row['dataset'], row['split'], row['protocol']) != (dataset, split,
                                                          protocol):
      continue
    if 'psnr' not in row:
      continue
    variant = row.get('model_config')
    if variant and not (model and all(
        model.get(key) == value for key, value in variant.items())):
      continue
    found.append({**row, 'source_info': published['sources'][row['source']]})
  return found


def _has_baseline(summary):
  return summary.get('rainy_baseline', True)


def _gap(ours, published, digits):
  if published is None:
    return '–'
  return f'{ours - published:+.{digits}f}'


def published_table(summary):
  """Markdown lines comparing the summary's means with every matching
  published row (ours − published); [] when none matches or the summary
  names no dataset."""
  dataset, split = summary.get('dataset'), summary.get('split')
  if not dataset or not split:
    return []
  means = summary['means']
  lines = []
  for protocol in summary['protocols']:
    for row in published_rows(dataset, split, protocol, summary.get('model')):
      psnr, ssim = row.get('psnr'), row.get('ssim')
      mark = ' ≈' if row.get('approximate_protocol') else ''
      lines.append(
          f"| {protocol}{mark} | {row['source']}, {row['table']}: "
          f"{row['label']} ({row['published_as']}) "
          f"| {'–' if psnr is None else f'{psnr:.2f}'} "
          f"| {'–' if ssim is None else f'{ssim:.3f}'} "
          f"| {_gap(means[protocol + '/psnr'], psnr, 2)} "
          f"| {_gap(means[protocol + '/ssim'], ssim, 3)} |")
  if not lines:
    return []
  return (['', f'Published DCSFN figures for {dataset}/{split} '
           '(dcsfn_jax/assets/published_results.json; ≈: the source\'s '
           'protocol is only close to ours, see PUBLISHED_RESULTS.md):', '',
           '| protocol | published | PSNR (dB) | SSIM | ours − published PSNR '
           '| ours − published SSIM |',
           '| --- | --- | ---: | ---: | ---: | ---: |'] + lines)


def markdown_table(summary, title):
  """The summary's means as a Markdown table, one row per protocol, then the
  published figures for its dataset and split (`published_table`)."""
  shapes = ('native sizes' if not summary['bucket'] else
            f"padded to shape buckets {', '.join(summary['shapes'])} "
            '(--bucket: outputs differ from native sizes)')
  crop = summary.get('crop_border') or 0
  notes = f', {crop} px cropped from every border' if crop else ''
  if summary.get('self_ensemble'):
    notes += ', geometric self-ensemble (8 flips and rotations averaged)'
  baseline = _has_baseline(summary)
  lines = [f'### {title}', '',
           f"{summary['num_images']} images, {shapes}{notes}.", '',
           '| protocol | PSNR (dB) | SSIM | '
           + ('rainy input PSNR / SSIM | ' if baseline else '')
           + 'definition |',
           '| --- | ---: | ---: | ' + ('---: | ' if baseline else '')
           + '--- |']
  means = summary['means']
  for protocol, description in summary['protocols'].items():
    rainy = (f"{means[protocol + '/psnr_rainy']:.2f} / "
             f"{means[protocol + '/ssim_rainy']:.4f} | " if baseline else '')
    lines.append(f"| {protocol} | {means[protocol + '/psnr']:.4f} "
                 f"| {means[protocol + '/ssim']:.4f} | {rainy}"
                 f'{description} |')
  lines += published_table(summary)
  return '\n'.join(lines) + '\n'


def check_replaceable(output_dir, overwrite, image_folders=IMAGE_FOLDERS):
  """Raises FileExistsError, before any work, when writing a report into
  `output_dir` would replace a file this project did not write: a report
  file of another origin, or anything in `image_folders` but marked PNGs."""
  if not os.path.isdir(output_dir):
    return
  refusals = [paths.refusal_to_replace(os.path.join(output_dir, name),
                                       overwrite, paths.starts_with(start))
              for name, start in REPORT_FILES.items()]
  for folder in image_folders:
    folder = os.path.join(output_dir, folder)
    if os.path.isdir(folder) and not os.path.islink(folder):
      refusals += [paths.refusal_to_replace(entry.path, overwrite,
                                            image_files.is_our_output)
                   for entry in sorted(os.scandir(folder),
                                       key=lambda entry: entry.name)]
    else:  # a file or link where the folder goes is never ours
      refusals.append(paths.refusal_to_replace(folder, overwrite,
                                               lambda path: False))
  refusals = [refusal for refusal in refusals if refusal]
  if refusals:
    more = len(refusals) - 1
    raise FileExistsError(refusals[0] + (f' ({more} more file(s) like it.)'
                                         if more else ''))


def _per_image_line(row, protocols, baseline):
  name = row['name'] if len(row['name']) <= 40 else row['name'][:37] + '...'
  cells = [f"{row[p + '/psnr']:.2f} / {row[p + '/ssim']:.4f}"
           for p in protocols]
  if baseline:
    cells.append(f"{row[protocols[0] + '/psnr_rainy']:.2f} / "
                 f"{row[protocols[0] + '/ssim_rainy']:.4f}")
  return f"| {name} | {' | '.join(cells)} |"


def per_image_table(rows, summary, csv_path='per_image.csv'):
  """Markdown lines: every image's PSNR / SSIM per protocol (and its rainy
  input's under the first protocol), so a mean is never read alone. Up to
  ALL_ROWS_UP_TO images all rows by name; beyond, the SHOWN_EXTREMES lowest
  and highest by the first protocol's PSNR, and where the rest are."""
  if not rows:
    return []
  protocols = list(summary['protocols'])
  baseline = _has_baseline(summary)
  header = ('| image | ' + ' | '.join(f'{p} PSNR / SSIM' for p in protocols)
            + (f' | rainy input ({protocols[0]}) |' if baseline else ' |'))
  rule = '| --- |' + ' ---: |' * (len(protocols) + baseline)
  if len(rows) <= ALL_ROWS_UP_TO:
    return (['', f'Per image ({len(rows)}):', '', header, rule]
            + [_per_image_line(row, protocols, baseline) for row in rows])
  ranked = sorted(rows, key=lambda row: row[protocols[0] + '/psnr'])
  lowest, highest = ranked[:SHOWN_EXTREMES], ranked[-SHOWN_EXTREMES:]
  return (['', f'Per image: the {SHOWN_EXTREMES} lowest and '
           f'{SHOWN_EXTREMES} highest {protocols[0]} PSNR of {len(rows)} '
           f'(all in {csv_path}):', '', header, rule]
          + [_per_image_line(row, protocols, baseline) for row in lowest]
          + [f'| ... {len(rows) - 2 * SHOWN_EXTREMES} more |'
             + ' |' * (len(protocols) + baseline)]
          + [_per_image_line(row, protocols, baseline) for row in highest])


def write_report(output_dir, rows, summary, title):
  """Writes per_image.csv, summary.json and results.md into output_dir."""
  protocols = list(summary['protocols'])
  per_image = _PER_IMAGE if _has_baseline(summary) else _PER_IMAGE[:2]
  columns = ['name', 'height', 'width', 'shape'] + [
      f'{p}/{m}' for p in protocols for m in per_image]
  with open(os.path.join(output_dir, 'per_image.csv'), 'w',
            newline='') as file:
    # The columns decide: a row's *_rainy values without a baseline are not
    # written.
    writer = csv.DictWriter(file, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v)
                       for k, v in row.items()})
  with open(os.path.join(output_dir, 'summary.json'), 'w') as file:
    json.dump(summary, file, indent=2, default=str)
  with open(os.path.join(output_dir, 'results.md'), 'w') as file:
    file.write(markdown_table(summary, title))


def read_rows(output_dir):
  """The rows of output_dir/per_image.csv, metric values as floats."""
  with open(os.path.join(output_dir, 'per_image.csv'), newline='') as file:
    return [{key: value if key in ('name', 'shape') else float(value)
             for key, value in row.items()}
            for row in csv.DictReader(file)]


class ImageWriter:
  """Writes each `evaluator.Scored` image: derained/NAME.png and, with
  panels, panels/NAME.png. Names are flattened and kept distinct."""

  def __init__(self, output_dir, *, panels=True):
    self._derained = os.path.join(output_dir, 'derained')
    self._panels = os.path.join(output_dir, 'panels') if panels else None
    self._taken = set()

  def __call__(self, scored):
    os.makedirs(self._derained, exist_ok=True)
    name = image_files.output_name(scored.name)
    stem, count = name[:-len('.png')], 1
    while name.lower() in self._taken:
      count += 1
      name = f'{stem}_{count}.png'
    self._taken.add(name.lower())
    derained = metrics.to_uint8(scored.derained)
    image_files.write_png(os.path.join(self._derained, name), derained)
    if self._panels is not None:
      os.makedirs(self._panels, exist_ok=True)
      image_files.write_png(os.path.join(self._panels, name),
                            image_panels.evaluation_panel(
                                scored.rainy, derained, scored.clean))
