"""Scoring saved outputs of any deraining method (`python -m dcsfn_jax.score`).

The outputs are read as uint8 RGB, paired with their ground truth (and, with
`rainy_dir`, their rainy inputs) by file name, and scored by the one
evaluator (`Evaluator(None, ...)`), so the figures are those `evaluate`
reports for its own saved PNGs.

Reading. PNG, JPEG, BMP (and TIFF) in any mode, as `images.read_image`
reads them: gray, palette and alpha are converted to RGB as displayed (EXIF
orientation applied). 16-bit PNGs, gray or colour (BasicSR's tensor2img with
out_type=np.uint16), are rounded to 8 bits as MATLAB's im2uint8 does,
(v + 128) // 257: Pillow alone would keep only the top byte of 16-bit colour
(`read_image`).

Matching, tried in this order; the first rule that pairs every file of both
folders one to one wins:
  1. identical stems: results/Rain100H/1.png with target/1.png (Restormer,
     MPRNet, DRSformer's Rain200H/L and SPA-Data: they save each output under
     its input's stem).
  2. naming conventions: the stems agree once role words and leading zeros
     are dropped: PReNet's rain-001 / norain-001 (and norain-001x2), suffixes
     such as 1_DR / 1_GT (DRSformer's DID-Data/DDN-Data results, both in one
     folder), _derained, _out, _pred, _restored, _gt, _clean, _target, _in.
  3. the same after dropping a suffix that every output shares: BasicSR's
     NAME_{suffix or run name}.png against NAME.png.
Otherwise a ValueError lists the first unmatched files of each side. A
folder without images of its own is read from its input/ (rainy) or target/
(clean) subfolder (MPRNet/Restormer Datasets/test/NAME, DRSformer
Datasets/NAME/targets). When --derained and --clean (or --rainy) are one
folder, each side takes the files named for its role (NAME_GT, norain-N for
clean; rain-N, NAME_rain for rainy; the rest are outputs).
"""
import dataclasses
import os
import re
import time

import numpy as np
from PIL import Image

from dcsfn_jax import data
from dcsfn_jax import metrics
from dcsfn_jax import paths
from dcsfn_jax.evaluation import evaluator
from dcsfn_jax import images
from dcsfn_jax.evaluation import report

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

# Subfolders a dataset folder keeps its images in, per role.
ROLE_FOLDERS = {
    'clean': ('target', 'targets', 'gt', 'groundtruth', 'ground_truth',
              'norain', 'clean'),
    'rainy': ('input', 'inputs', 'rainy', 'rain', 'rainy_image'),
}

# How many unmatched files of each side an error names.
SHOWN_UNMATCHED = 8

_ROLE_WORDS = {
    'clean': r'gt|clean|target|targets|norain|groundtruth|ground_truth|hq',
    'rainy': r'rain|rainy|in|input|lq',
    'derained': (r'dr|derain|derained|out|output|pred|prediction|restored|'
                 r'result'),
}
_PREFIXES = {'clean': re.compile(r'^norain[-_]', re.IGNORECASE),
             'rainy': re.compile(r'^rainy?[-_]', re.IGNORECASE)}
_SUFFIXES = {role: re.compile(rf'[-_](?:{words})$', re.IGNORECASE)
             for role, words in _ROLE_WORDS.items()}
_X2 = re.compile(r'(?<=\d)x2$', re.IGNORECASE)

# Pillow's EXIF orientation -> transpose (as ImageOps.exif_transpose).
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT,
                3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


_SIXTEEN_BIT_GRAY = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N')


def _sixteen_bit_colour_mode(image):
  """'RGB' or 'RGBA' for a 16-bit colour PNG that Pillow would truncate,
  else None."""
  if image.format != 'PNG' or len(image.tile) != 1:
    return None
  rawmode = image.tile[0].args
  rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
  return {'RGB;16B': 'RGB', 'RGBA;16B': 'RGBA'}.get(rawmode)


def _decode_png_bytes(path, rawmode):
  """The PNG's samples unpacked with `rawmode`: Pillow's 'RGB;16L' unpacker
  on big-endian PNG data takes each sample's low byte, 'RGB;16B' its high
  byte; uint8 [H, W, C]."""
  with Image.open(path) as image:
    image.tile = [image.tile[0]._replace(args=rawmode)]
    image.load()
    return np.asarray(image, np.uint8)


def read_scored_image(path):
  """A saved image as uint8 RGB [H, W, 3], and whether it had 16 bits.

  Everything but 16-bit colour PNGs goes through `images.read_image`;
  those are decoded to their full 16 bits (high and low byte separately)
  and rounded to 8 as MATLAB's im2uint8: (v + 128) // 257.

  Raises:
    images.UnreadableImageError: naming the file.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as image:
      mode = _sixteen_bit_colour_mode(image)
      orientation = image.getexif().get(0x0112, 1) if mode else 1
      sixteen_bit_gray = image.mode in _SIXTEEN_BIT_GRAY
  except Exception:  # pylint: disable=broad-except  # read_image explains
    return images.read_image(path), False
  if mode is None:
    # read_image rounds 16-bit gray as im2uint8 does.
    return images.read_image(path), sixteen_bit_gray
  try:
    high = _decode_png_bytes(path, f'{mode};16B').astype(np.uint32)
    low = _decode_png_bytes(path, f'{mode};16L').astype(np.uint32)
  except Exception as error:  # PIL raises many types for broken files
    raise images.UnreadableImageError(
        f'{path}: not a readable 16-bit PNG ({type(error).__name__}: '
        f'{error}).') from error
  rgb = (((high * 256 + low) + 128) // 257).astype(np.uint8)[..., :3]
  if orientation in _ORIENTATION:
    rgb = np.asarray(Image.fromarray(rgb).transpose(_ORIENTATION[orientation]))
  return rgb, True


def _list_images(folder):
  return sorted(entry.path for entry in os.scandir(folder)
                if entry.is_file()
                and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES)


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
  raise ValueError(f'{flag} {folder} holds no images '
                   f'({", ".join(IMAGE_SUFFIXES)}) of its own{hint}.')


def _role(stem):
  """'clean', 'rainy', 'derained' or None, from the file name alone."""
  for role in ('clean', 'rainy'):
    if _PREFIXES[role].search(stem):
      return role
  for role in ('clean', 'rainy', 'derained'):
    if _SUFFIXES[role].search(stem):
      return role
  return None


def _stem(path):
  return os.path.splitext(os.path.basename(path))[0]


def _convention_key(stem, roles):
  """`stem` without the prefixes/suffixes of `roles`, lower case, digit runs
  without leading zeros: rain-001 -> '1', 1_GT -> '1', norain-3x2 -> '3'."""
  stem = _X2.sub('', stem)
  for role in roles:
    for pattern in (_PREFIXES.get(role), _SUFFIXES[role]):
      if pattern is not None:
        stem = pattern.sub('', stem)
  return re.sub(r'\d+', lambda m: str(int(m.group())), stem.lower())


def _common_suffixes(stems):
  """Every '_suffix' all stems end with, longest first: BasicSR names its
  outputs NAME_{suffix or run name}, and a run name may hold '_' itself."""
  if not stems:
    return []
  first = stems[0]
  candidates = [first[i:] for i in range(1, len(first)) if first[i] == '_']
  return [c for c in candidates
          if all(s.endswith(c) and len(s) > len(c) for s in stems)]


def _keyed(files, key):
  """{key: file} and the files whose key another file already has."""
  keyed, clashes = {}, []
  for path in files:
    k = key(path)
    if k in keyed:
      clashes.append(path)
    else:
      keyed[k] = path
  return keyed, clashes


def _shown(files):
  names = [os.path.basename(f) for f in files[:SHOWN_UNMATCHED]]
  more = len(files) - SHOWN_UNMATCHED
  return ', '.join(names) + (f' (+{more} more)' if more > 0 else '')


def match_files(outputs, targets, *, output_roles, target_roles,
                output_flag, target_flag):
  """Pairs two lists of image paths one to one (the module docstring's
  rules); `*_roles` name the role words each side's names may carry (an
  output is often named like its rainy input: ('derained', 'rainy')).

  Returns:
    ([(output, target)] sorted by output, the rule that matched).

  Raises:
    ValueError: naming the first unmatched files of each side.
  """
  rules = [('identical stems', _stem, _stem),
           ('naming conventions',
            lambda p: _convention_key(_stem(p), output_roles),
            lambda p: _convention_key(_stem(p), target_roles))]
  for suffix in _common_suffixes([_stem(p) for p in outputs]):
    rules.append((f'naming conventions after dropping the suffix '
                  f'{suffix!r} all outputs share',
                  lambda p, n=len(suffix): _convention_key(_stem(p)[:-n],
                                                           output_roles),
                  lambda p: _convention_key(_stem(p), target_roles)))
  best = None
  for rule, output_key, target_key in rules:
    keyed_outputs, output_clashes = _keyed(outputs, output_key)
    keyed_targets, target_clashes = _keyed(targets, target_key)
    common = keyed_outputs.keys() & keyed_targets.keys()
    if (not output_clashes and not target_clashes
        and len(common) == len(outputs) == len(targets)):
      return sorted((keyed_outputs[k], keyed_targets[k]) for k in common), rule
    unmatched = (sorted(keyed_outputs[k] for k in keyed_outputs.keys()
                        - common),
                 sorted(keyed_targets[k] for k in keyed_targets.keys()
                        - common), output_clashes + target_clashes)
    if best is None or len(common) > best[0]:
      best = (len(common), rule, unmatched)
  matched, rule, (lonely_outputs, lonely_targets, clashes) = best
  parts = [f'cannot pair {output_flag} and {target_flag} one to one by file '
           f'name (best rule, {rule}, pairs {matched} of {len(outputs)} and '
           f'{len(targets)} files)']
  if lonely_outputs:
    parts.append(f'{len(lonely_outputs)} in {output_flag} without a partner: '
                 f'{_shown(lonely_outputs)}')
  if lonely_targets:
    parts.append(f'{len(lonely_targets)} in {target_flag} without a partner: '
                 f'{_shown(lonely_targets)}')
  if clashes:
    parts.append(f'{len(clashes)} named like another file of their folder: '
                 f'{_shown(clashes)}')
  parts.append('names pair up when identical, or as rain-N/norain-N, '
               'NAME_DR/NAME_GT, or NAME_suffix/NAME (see --help)')
  raise ValueError('; '.join(parts) + '.')


def _split_shared_folder(files, role):
  """The files of a folder shared by two flags that are named for `role`."""
  return [path for path in files if _role(_stem(path)) == role]


@dataclasses.dataclass(frozen=True)
class Pair:
  """One scored image: its output, ground truth and optional rainy file."""
  name: str
  derained: str
  clean: str
  rainy: str | None = None


def find_pairs(derained_dir, clean_dir, rainy_dir=None):
  """Matches the folders' files; returns ([Pair], {'derained', 'clean',
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
  clean_pairs, clean_rule = match_files(
      files['derained'], files['clean'], output_roles=('derained', 'rainy'),
      target_roles=('clean',), output_flag='--derained',
      target_flag='--clean')
  rules = {'clean': clean_rule}
  rainy_of = {}
  if rainy_dir is not None:
    rainy_pairs, rules['rainy'] = match_files(
        files['rainy'], files['clean'], output_roles=('rainy',),
        target_roles=('clean',), output_flag='--rainy', target_flag='--clean')
    rainy_of = {clean: rainy for rainy, clean in rainy_pairs}
  pairs = [Pair(os.path.relpath(derained, derained_dir), derained, clean,
                rainy_of.get(clean)) for derained, clean in clean_pairs]
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
    image, sixteen_bit = read_scored_image(path)
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

  Args mirror the `score` command's flags. Nothing is written before the
  folders, the names and the flags have been checked; an output folder this
  call created is removed again if scoring fails.

  Returns:
    The summary dict (also written to output_dir/summary.json).
  """
  protocols = metrics.check_protocols(protocols)
  if isinstance(crop_border, bool) or crop_border < 0:
    raise ValueError(f'--crop_border={crop_border} must be 0 or more pixels.')
  dataset, split = check_dataset(dataset, split)
  derained_dir, clean_dir = paths.expand(derained_dir), paths.expand(clean_dir)
  rainy_dir = paths.expand(rainy_dir) or None
  pairs, folders, rules = find_pairs(derained_dir, clean_dir, rainy_dir)
  output_dir = paths.expand(output_dir) or default_output_dir(derained_dir)
  paths.check_output_folder(output_dir, overwrite)
  baseline = rainy_dir is not None
  examples = ScoredImages(pairs, crop_border)
  start = time.time()
  rows, summary = evaluator.Evaluator(
      None, protocols=protocols, batch_size=batch_size,
      baseline=baseline).run(None, examples, progress=progress)
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
