"""Scoring saved outputs of any deraining method (`python -m dcsfn_jax.score`).

The outputs are read as uint8 RGB (`images.files.read_scored_image`: any
mode, EXIF orientation applied, 16-bit PNGs rounded to 8 bits as MATLAB's
im2uint8 does), paired with their ground truth (and, with `rainy_dir`, their
rainy inputs) by file name (`images.files.match_files`), and scored by the
one evaluator (`Evaluator(None, ...)`), so the figures are those `evaluate`
reports for its own saved PNGs.

A folder without images of its own is read from its input/ (rainy) or
target/ (clean) subfolder (MPRNet/Restormer Datasets/test/NAME, DRSformer
Datasets/NAME/targets). When --derained and --clean (or --rainy) are one
folder, each side takes the files named for its role (NAME_GT, norain-N for
clean; rain-N, NAME_rain for rainy; the rest are outputs).
"""
import os
import time

from dcsfn_jax import data
from dcsfn_jax import metrics
from dcsfn_jax import paths
from dcsfn_jax.evaluation import evaluator
from dcsfn_jax.evaluation import report
from dcsfn_jax.images import files as image_files

# Subfolders a dataset folder keeps its images in, per role.
ROLE_FOLDERS = {
    'clean': ('target', 'targets', 'gt', 'groundtruth', 'ground_truth',
              'norain', 'clean'),
    'rainy': ('input', 'inputs', 'rainy', 'rain', 'rainy_image'),
}

def _list_images(folder):
  return [os.fspath(path) for path in image_files.list_images(folder)]


def image_folder(folder, role, flag):
  """The folder holding `role`'s images: `folder` itself, or, when it has
  none, its one ROLE_FOLDERS subfolder that has some (e.g. target/).

  Raises:
    ValueError / NotADirectoryError / FileNotFoundError naming `flag`.
  """
  if not os.path.exists(folder):
    raise FileNotFoundError(f'{flag} {folder} does not exist.')
  if not os.path.isdir(folder):
    raise NotADirectoryError(f'{flag} {folder} is a file; give the folder '
                             'that holds the images.')
  if _list_images(folder):
    return folder
  candidates = {entry.name.lower(): entry.path for entry in os.scandir(folder)
                if entry.is_dir()}
  for name in ROLE_FOLDERS.get(role, ()):
    if name in candidates and _list_images(candidates[name]):
      return candidates[name]
  hint = (f' or in a subfolder named {"/, ".join(ROLE_FOLDERS[role])}/'
          if role in ROLE_FOLDERS else '')
  suffixes = ', '.join(image_files.IMAGE_SUFFIXES)
  raise ValueError(f'{flag} {folder} holds no images ({suffixes}) of its '
                   f'own{hint}.')


def _split_shared_folder(files, role):
  """The files of a folder shared by two flags that are named for `role`."""
  return [path for path in files
          if image_files.role_of(image_files.stem(path)) == role]


def find_pairs(derained_dir, clean_dir, rainy_dir=None):
  """Matches the folders' files; returns ([images.files.Pair] with
  `derained`, `clean` and `rainy` (or None) paths, {'derained', 'clean',
  'rainy'}: the folders read, {'clean': rule, 'rainy': rule})."""
  derained_dir = image_folder(derained_dir, 'derained', '--derained')
  clean_dir = image_folder(clean_dir, 'clean', '--clean')
  folders = {'derained': derained_dir, 'clean': clean_dir}
  files = {'derained': _list_images(derained_dir),
           'clean': _list_images(clean_dir)}
  if rainy_dir is not None:
    folders['rainy'] = image_folder(rainy_dir, 'rainy', '--rainy')
    files['rainy'] = _list_images(folders['rainy'])
  for role in ('clean', 'rainy'):
    if role not in files:
      continue
    shared = [other for other in files if other != role and
              os.path.samefile(folders[other], folders[role])]
    if not shared:
      continue
    mine = _split_shared_folder(files[role], role)
    if not mine:
      raise ValueError(
          f'--{role} and --{shared[0]} are one folder ({folders[role]}), but '
          f'none of its files is named as a {role} image (e.g. '
          + ('NAME_GT.png, norain-N.png' if role == 'clean' else
             'rain-N.png, NAME_rain.png') + ').')
    files[role] = mine
    taken = set(mine)
    for other in shared:
      files[other] = [p for p in files[other] if p not in taken]
  clean_pairs, clean_rule = image_files.match_files(
      files['derained'], files['clean'], output_roles=('derained', 'rainy'),
      target_roles=('clean',), output_flag='--derained',
      target_flag='--clean')
  rules = {'clean': clean_rule}
  rainy_of = {}
  if rainy_dir is not None:
    rainy_pairs, rules['rainy'] = image_files.match_files(
        files['rainy'], files['clean'], output_roles=('rainy',),
        target_roles=('clean',), output_flag='--rainy', target_flag='--clean')
    rainy_of = {clean: rainy for rainy, clean in rainy_pairs}
  pairs = [image_files.Pair(os.path.relpath(derained, derained_dir),
                            rainy=rainy_of.get(clean), clean=clean,
                            derained=derained)
           for derained, clean in clean_pairs]
  return pairs, folders, rules


def _crop(image, border, path):
  if not border:
    return image
  height, width = image.shape[:2]
  if 2 * border >= min(height, width):
    raise ValueError(f'--crop_border={border} leaves nothing of {path} '
                     f'({width}x{height}).')
  return image[border:height - border, border:width - border]


class ScoredImages:
  """The pairs as the examples `Evaluator.run` reads, decoded on access:
  {'name', 'derained', 'clean', 'rainy'} uint8 RGB, cropped by
  `crop_border`. Without rainy files, 'rainy' is the clean image, which
  the evaluator then does not score (baseline=False)."""

  def __init__(self, pairs, crop_border=0):
    self.pairs = pairs
    self.crop_border = crop_border
    self.sixteen_bit = set()

  def __len__(self):
    return len(self.pairs)

  def _read(self, path):
    image, sixteen_bit = image_files.read_scored_image(path)
    if sixteen_bit:
      self.sixteen_bit.add(path)
    return image

  def __getitem__(self, index):
    pair = self.pairs[index]
    derained = self._read(pair.derained)
    clean = self._read(pair.clean)
    rainy = None if pair.rainy is None else self._read(pair.rainy)
    for other, path in ((derained, pair.derained), (rainy, pair.rainy)):
      if other is not None and other.shape != clean.shape:
        raise ValueError(
            f'{path} is {other.shape[1]}x{other.shape[0]} but its clean '
            f'image {pair.clean} is {clean.shape[1]}x{clean.shape[0]} '
            '(width x height); outputs must keep the size of the ground '
            'truth (crop or pad them back, as test.py scripts do).')
    derained = _crop(derained, self.crop_border, pair.derained)
    clean = _crop(clean, self.crop_border, pair.clean)
    rainy = clean if rainy is None else _crop(rainy, self.crop_border,
                                              pair.rainy)
    return {'name': pair.name, 'derained': derained, 'clean': clean,
            'rainy': rainy}


def check_dataset(dataset, split):
  """(dataset, split) checked against the catalog; split defaults to
  'test'. (None, None) without a dataset."""
  if dataset is None:
    if split is not None:
      raise ValueError('--split needs --dataset.')
    return None, None
  if dataset not in data.SPECS:
    raise ValueError(f'--dataset {dataset!r} is not one of '
                     f'{", ".join(sorted(data.SPECS))}.')
  splits = sorted(data.SPECS[dataset].split_folders) or ['test', 'train']
  if split is None:
    if 'test' not in splits:
      raise ValueError(f'{dataset} has no test split; pass --split, one of '
                       f'{", ".join(splits)}.')
    split = 'test'
  if split not in splits and not (split.startswith('train')
                                  and 'train' in splits):
    raise ValueError(f'--split {split!r} is not a split of {dataset}: '
                     f'{", ".join(splits)}.')
  return dataset, split


def default_output_dir(derained_dir):
  """DERAINED_score, beside the outputs' folder (never inside it)."""
  return os.path.normpath(os.fspath(derained_dir)).rstrip(os.sep) + '_score'


def score_folders(derained_dir, clean_dir, *, rainy_dir=None,
                  protocols=metrics.PROTOCOLS, crop_border=0,
                  output_dir=None, dataset=None, split=None, batch_size=None,
                  overwrite=False, progress=True):
  """Scores a folder of saved outputs against their ground truth and writes
  per_image.csv, summary.json and results.md (`report.write_report`).

  Args mirror the `score` command's flags. Nothing is read or written before
  the output folder, the flags, the folders and the names have been checked;
  an output folder this call created is removed again if scoring fails.

  Returns:
    The summary dict (also written to output_dir/summary.json).
  """
  protocols = metrics.check_protocols(protocols)
  if isinstance(crop_border, bool) or crop_border < 0:
    raise ValueError(f'--crop_border={crop_border} must be 0 or more pixels.')
  dataset, split = check_dataset(dataset, split)
  derained_dir, clean_dir = paths.expand(derained_dir), paths.expand(clean_dir)
  rainy_dir = paths.expand(rainy_dir) or None
  output_dir = paths.expand(output_dir) or default_output_dir(derained_dir)
  paths.check_output_folder(output_dir, overwrite)
  report.check_replaceable(output_dir, overwrite, image_folders=())
  pairs, folders, rules = find_pairs(derained_dir, clean_dir, rainy_dir)
  baseline = rainy_dir is not None
  examples = ScoredImages(pairs, crop_border)
  start = time.time()
  rows, summary = evaluator.Evaluator(
      None, protocols=protocols, batch_size=batch_size,
      baseline=baseline).run(None, examples, progress=progress,
                             progress_label='score')
  summary.update({
      'rainy_baseline': baseline,
      'crop_border': crop_border,
      'derained_dir': folders['derained'],
      'clean_dir': folders['clean'],
      'rainy_dir': folders.get('rainy'),
      'matching': rules,
      'sixteen_bit_files_rounded': len(examples.sixteen_bit),
      'dataset': dataset,
      'split': split,
      'seconds': round(time.time() - start, 2),
      'output_dir': output_dir,
  })
  with paths.new_folder(output_dir):
    report.write_report(output_dir, rows, summary, title(summary))
  return summary


def title(summary):
  """The report's heading: what was scored against what."""
  named = (f"{summary['dataset']}/{summary['split']}: "
           if summary.get('dataset') else '')
  return (f"{named}score of {summary['derained_dir']} against "
          f"{summary['clean_dir']}")
