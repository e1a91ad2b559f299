"""The deraining datasets: where each split lives and which layouts it accepts.

`discover(name, manual_dir)` returns {split: [Pair]} for a dataset's manual
folder. Split folders are matched case-insensitively against the names the
common distributions use; a `{split}.txt` list file in manual_dir overrides
the folder search for that split.

Layout modes (`prepare --layout`):
  auto          the dataset's layouts, in order. Side-by-side images count
                only for the datasets distributed that way
                (`DatasetSpec.ships_side_by_side`: Rain800, Rain1200 and the
                RESCAN/DCSFN copies of Rain100H/L), and only in a folder whose
                names do not pair up (rainy_N.png with clean_N.png).
  side_by_side  every split folder holds side-by-side images, with the clean
                half on the dataset's side; for any dataset with such a form.
"""
import dataclasses
import functools
import pathlib
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from dcsfn_jax.data import layouts
from dcsfn_jax.data.layouts import DatasetLayoutError, PrepareError
from dcsfn_jax.images import files as image_files
from dcsfn_jax.images.files import Pair

Finder = Callable[..., 'list[Pair] | None']
LAYOUT_MODES = ('auto', 'side_by_side')

_PAIRED_NOTE = (
    'Any split may instead be given as a list file `{split}.txt` in the '
    'manual folder, one "rainy_path clean_path" per line.')


class Layout(NamedTuple):
  """A layout a split folder may be in; `find(folder)` gives its pairs or
  None. Side-by-side finders also take `check_names` (see `discover`)."""
  name: str
  find: Finder
  side_by_side: bool = False


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  description: str
  source: str                               # where to download it
  split_folders: dict[str, tuple[str, ...]]  # split -> candidate folders
  finders: tuple[Layout, ...]               # in the order they are tried
  paired: bool = True
  other_layouts: str = ''                   # accepted forms found elsewhere
  ships_side_by_side: bool = False          # side-by-side found with auto

  def layouts(self, mode: str = 'auto') -> tuple[Layout, ...]:
    """The layouts `discover` tries in `mode` (see LAYOUT_MODES)."""
    if mode == 'side_by_side':
      return tuple(l for l in self.finders if l.side_by_side)
    return tuple(l for l in self.finders
                 if self.ships_side_by_side or not l.side_by_side)

  @property
  def instructions(self) -> str:
    if not self.split_folders:
      return f'{self.description}\nDownload: {self.source}'
    folders = '\n'.join(
        f'  {split}: one of {", ".join(c + "/" for c in candidates)}'
        for split, candidates in self.split_folders.items())
    accepted = ', '.join([l.name for l in self.layouts()]
                         + ([self.other_layouts] if self.other_layouts else []))
    notes = [_PAIRED_NOTE] if self.paired else []
    if self.layouts('side_by_side'):
      forms = ', '.join(l.name for l in self.layouts('side_by_side'))
      notes.append(
          ('Side-by-side images are taken only where their names do not pair '
           'up (rainy_N.png with clean_N.png); ' if self.ships_side_by_side
           else 'Not distributed side by side; for a copy re-packed that way, ')
          + f'--layout side_by_side reads every split folder as: {forms}.')
    return (f'{self.description}\nDownload: {self.source}\n'
            f'Unpack it and pass its folder as --manual_dir. Splits are looked '
            f'for in these folders (case-insensitive; "." is the manual folder '
            f'itself):\n{folders}\nAccepted layouts in a split folder: '
            f'{accepted}.' + ''.join(f'\n{note}' for note in notes))


_INPUT_TARGET = (Layout('input/target (or rain/gt, rainy/gt, rainy/clean) '
                        'folders with identical names',
                        layouts.find_input_target),)


def _side(clean_side: str) -> Layout:
  return Layout(f'side-by-side images, clean half on the {clean_side}',
                functools.partial(layouts.find_side_by_side,
                                  clean_side=clean_side), side_by_side=True)


def _standard_finders(clean_side: str, allowed_unused_clean: int = 0
                      ) -> tuple[Layout, ...]:
  return (
      Layout('prenet (rain-N.png + norain-N.png, rainy ones optionally in '
             'rainy/)', functools.partial(
                 layouts.find_prenet,
                 allowed_unused_clean=allowed_unused_clean)),
      Layout('x2 (rain/X2/norain-Nx2.png + norain/norain-N.png)',
             layouts.find_x2),
      _INPUT_TARGET[0],
      _side(clean_side),
  )


SPECS: dict[str, DatasetSpec] = {}


def _register(spec: DatasetSpec) -> None:
  SPECS[spec.name] = spec


_register(DatasetSpec(
    name='rain100h',
    description=('Rain100H, the old JORDER version (Yang et al., CVPR 2017): '
                 'RainTrainH, 1800 train pairs, and Rain100H, 100 test pairs. '
                 'Split train_1254 (PReNet) drops the 546 train pairs whose '
                 'backgrounds also appear in the test set: the pairs named in '
                 'train_1254.txt (one name per line) if the manual folder has '
                 'that file; else the whole train split if it has 1254 pairs '
                 "(PReNet's copy is already filtered, and may keep the 546 "
                 'unused norain-N files); else the train pairs '
                 'whose clean image matches no test clean image (16x16 gray '
                 'thumbnails, correlation < 0.95). The summary shows the '
                 'count, so check it is 1254.'),
    source=('https://github.com/csdwren/PReNet (datasets/train/RainTrainH, '
            'datasets/test/Rain100H) or the RESCAN/DCSFN side-by-side copies.'),
    split_folders={'train': ('train/RainTrainH', 'RainTrainH', 'train',
                             'training'),
                   'test': ('test/Rain100H', 'Rain100H', 'test', 'testing')},
    # PReNet's RainTrainH may keep the norain-N of its 546 deleted pairs.
    finders=_standard_finders('left', allowed_unused_clean=546),
    ships_side_by_side=True))

_register(DatasetSpec(
    name='rain100l',
    description=('Rain100L, the old JORDER version: RainTrainL, 200 train '
                 'pairs, and Rain100L, 100 test pairs.'),
    source=('https://github.com/csdwren/PReNet (datasets/train/RainTrainL, '
            'datasets/test/Rain100L) or the RESCAN/DCSFN side-by-side copies.'),
    split_folders={'train': ('train/RainTrainL', 'RainTrainL', 'train',
                             'training'),
                   'test': ('test/Rain100L', 'Rain100L', 'test', 'testing')},
    finders=_standard_finders('left'), ships_side_by_side=True))

for _strength in ('H', 'L'):
  _register(DatasetSpec(
      name=f'rain200{_strength.lower()}',
      description=(f'Rain200{_strength}, the new JORDER version (Yang et al., '
                   'TPAMI 2019): 1800 train and 200 test pairs.'),
      source='https://www.icst.pku.edu.cn/struct/Projects/joint_rain_removal.html',
      split_folders={'train': ('train', 'training', f'rain_data_train_'
                               f'{"Heavy" if _strength == "H" else "Light"}'),
                     'test': ('test', 'testing', f'rain_data_test_'
                              f'{"Heavy" if _strength == "H" else "Light"}')},
      finders=_standard_finders('left')))

_register(DatasetSpec(
    name='rain1200',
    description=('Rain1200 (DID-MDN, Zhang & Patel, CVPR 2018): 12,000 train '
                 'pairs in three density folders (Rain_Heavy, Rain_Medium, '
                 'Rain_Light, each with train2018new/) and 1,200 test pairs; '
                 'side-by-side JPEGs with the rainy half on the LEFT. The '
                 'density label comes from the folder.'),
    source='https://github.com/hezhangsprinter/DID-MDN',
    split_folders={'train': ('.', 'DID-MDN-training', 'train'),
                   'test': ('DID-MDN-test', 'DID-MDN-datasets/DID-MDN-test',
                            'test', 'testing')},
    finders=(Layout('density folders Rain_{Heavy,Medium,Light}/'
                    'train2018new/ of side-by-side images (rainy left)',
                    lambda folder, **kw: _find_did_mdn_densities(folder, **kw),
                    side_by_side=True),
             _INPUT_TARGET[0],
             _side('right')),
    ships_side_by_side=True))

_register(DatasetSpec(
    name='rain1400',
    description=('Rain1400 / Rain12600 (DDN, Fu et al., CVPR 2017): 1000 '
                 'scenes with 14 streak variants each; scenes 1-900 train, '
                 '901-1000 test.'),
    source='https://xueyangfu.github.io/projects/cvpr2017.html',
    split_folders={'train': ('training', 'train', '.'),
                   'test': ('testing', 'test', '.')},
    finders=(Layout('ddn (rainy_image/I_J.jpg + ground_truth/I.jpg)',
                    layouts.find_ddn),)))

_register(DatasetSpec(
    name='rain12',
    description='Rain12 (Li et al., CVPR 2016): 12 test pairs.',
    source='https://yu-li.github.io/ (Rain12 with the GMM paper)',
    split_folders={'test': ('test', 'Rain12', '.')},
    finders=(Layout('NAME_in.png + NAME_GT.png', layouts.find_in_gt),)
    + _standard_finders('left')))

_register(DatasetSpec(
    name='rain800',
    description=('Rain800 (ID-CGAN, Zhang et al., 2019): 700 train and 100 '
                 'test pairs, side-by-side with the clean half on the LEFT.'),
    source='https://github.com/hezhangsprinter/ID-CGAN',
    split_folders={'train': ('training', 'train'),
                   'test': ('test_syn', 'testing', 'test')},
    finders=_INPUT_TARGET + (_side('left'),), ships_side_by_side=True))

_register(DatasetSpec(
    name='rain13k',
    description=('Rain13K, the MPRNet/Restormer training collection (13,712 '
                 'pairs), with its test sets Test100, Rain100H, Rain100L, '
                 'Test2800 and Test1200.'),
    source=('https://github.com/swz30/MPRNet/tree/main/Deraining '
            '(train/Rain13K and test/*, each with input/ and target/)'),
    split_folders={
        'train': ('train/Rain13K', 'Rain13K', 'train'),
        **{name.lower(): (f'test/{name}', name)
           for name in ('Test100', 'Rain100H', 'Rain100L', 'Test2800',
                        'Test1200')}},
    finders=_INPUT_TARGET))

_register(DatasetSpec(
    name='spa_data',
    description=('SPA-Data (Wang et al., CVPR 2019): real rain with derived '
                 'ground truth, given by list files.'),
    source='https://stevewongv.github.io/derain-project.html',
    split_folders={'train': ('train', 'real_world', '.'),
                   'test': ('test', 'real_test_1000', 'testing')},
    finders=_INPUT_TARGET,
    other_layouts=('list files anywhere under the manual folder (*.txt with '
                   '"rainy_path clean_path" lines, e.g. real_world.txt; a name '
                   'containing "test" marks the test list)')))

_register(DatasetSpec(
    name='real_rain',
    description=('Real rainy photos without ground truth, for NIQE and visual '
                 'checks.'),
    source='any folder of rainy photos (e.g. the SPA-Data or DDN real sets)',
    split_folders={'test': ('test', '.')},
    finders=(Layout('a folder of images', layouts.find_unpaired),),
    paired=False))

_register(DatasetSpec(
    name='synthetic_rain',
    description=('Synthetic rain streaks on clean photos: by default the '
                 "photos inside scikit-image's wheel (no download), train and "
                 'test from disjoint photos.'),
    source=('nothing to download; optionally --manual_dir names a folder of '
            'clean photos (the last fifth, in name order, becomes the test '
            'split)'),
    split_folders={},
    finders=(),
    paired=True))


def _find_did_mdn_densities(folder: pathlib.Path, check_names: bool = True
                            ) -> list[Pair] | None:
  pairs = []
  for density in ('heavy', 'medium', 'light'):
    density_folder = layouts.find_child(folder, f'Rain_{density}/train2018new')
    if density_folder is None:
      continue
    for pair in layouts.find_side_by_side(density_folder, 'right', density,
                                          check_names) or []:
      pairs.append(dataclasses.replace(
          pair, name=f'Rain_{density.capitalize()}/{pair.name}'))
  return pairs or None


def _ddn_by_scene(folder: pathlib.Path, split: str) -> list[Pair] | None:
  """DDN scenes 1-900 are train, 901-1000 test, when both share one folder."""
  in_split = (lambda i: i <= 900) if split == 'train' else (lambda i: i > 900)
  return layouts.find_ddn(folder, keep=in_split)


def _spa_list_files(manual_dir: pathlib.Path) -> dict[str, list[Pair]]:
  found = {}
  for list_file in sorted(manual_dir.rglob('*.txt')):
    if not layouts.looks_like_list_file(list_file):
      continue
    split = 'test' if 'test' in list_file.stem.lower() else 'train'
    if split in found:
      raise DatasetLayoutError(
          f'SPA-Data: two list files for split {split!r}: '
          f'{found[split][0]} and {list_file}. Keep one.')
    found[split] = (list_file, layouts.read_list_file(list_file))
  return {split: pairs for split, (_, pairs) in found.items()}


BACKGROUND_MATCH_CORRELATION = 0.95


def background_thumbnail(pair: Pair) -> np.ndarray:
  """Standardised 16x16 gray thumbnail of a pair's clean image, flattened."""
  path = pair.clean if pair.clean_side == 'file' else pair.rainy
  with layouts.open_image(path) as image:
    image = image.convert('L')
    if pair.clean_side in ('left', 'right'):
      half = image.width // 2
      box = (0, 0, half, image.height) if pair.clean_side == 'left' else (
          half, 0, 2 * half, image.height)
      image = image.crop(box)
    pixels = np.asarray(image.resize((16, 16), Image.Resampling.BOX),
                        np.float64).ravel()
  return (pixels - pixels.mean()) / (pixels.std() + 1e-6)


def prenet_train_split(train: list[Pair], test: list[Pair] | None,
                       manual_dir: pathlib.Path) -> list[Pair] | None:
  """Rain100H's 1254 train pairs whose backgrounds are not in the test set."""
  names_file = layouts.find_child(manual_dir, 'train_1254.txt')
  if names_file is not None and names_file.is_file():
    wanted = [line.strip() for line in names_file.read_text().splitlines()
              if line.strip()]
    by_name = {}
    for pair in train:
      by_name[pair.name] = by_name[pair.rainy.name] = by_name[
          pair.rainy.stem] = pair
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
      raise DatasetLayoutError(
          f'{names_file} names pairs that are not in the train split: '
          f'{", ".join(unknown[:10])}. Use pair names or rainy file names.')
    return [by_name[name] for name in wanted]
  if len(train) == 1254:
    return train
  if not test:
    return None
  test_thumbnails = np.stack([background_thumbnail(p) for p in test])
  kept = []
  for pair in train:
    correlation = test_thumbnails @ background_thumbnail(pair) / 256
    if correlation.max() < BACKGROUND_MATCH_CORRELATION:
      kept.append(pair)
  return kept


def _no_layout_error(spec: DatasetSpec, folder: pathlib.Path, problem: str,
                     fix: str) -> DatasetLayoutError:
  """First line: the problem, what `folder` holds and the fix; then the
  folder's listing and the dataset's instructions."""
  images = image_files.list_images(folder)
  held = f'; it holds {layouts.describe_names(images)}' if images else ''
  return DatasetLayoutError(
      f'{spec.name}: {problem}{held}. {fix}\n'
      f'Found: {layouts.describe_folder(folder)}\n'
      f'Expected:\n{spec.instructions}')


def _find_pairs(spec: DatasetSpec, folder: pathlib.Path,
                mode: str) -> list[Pair] | None:
  for layout in spec.layouts(mode):
    if layout.side_by_side:
      pairs = layout.find(folder, check_names=mode == 'auto')
    else:
      pairs = layout.find(folder)
    if pairs is not None:
      return pairs
  return None


def check_layout(name: str, layout: str) -> None:
  """A PrepareError unless dataset `name` can be read in layout mode
  `layout`."""
  if layout not in LAYOUT_MODES:
    raise PrepareError(f'--layout {layout}: choose one of '
                       f'{", ".join(LAYOUT_MODES)}.')
  spec = SPECS[name]
  if layout == 'side_by_side' and not spec.layouts('side_by_side'):
    forms = '; '.join(l.name for l in spec.layouts()) or 'none to choose'
    raise PrepareError(
        f'--layout side_by_side: {name} has no side-by-side form (its '
        f'layouts: {forms}); pass --layout auto, and see --instructions.')


def discover(name: str, manual_dir: pathlib.Path,
             layout: str = 'auto') -> dict[str, list[Pair]]:
  """{split: pairs} for dataset `name` in `manual_dir`; `layout` is one of
  LAYOUT_MODES (see the module docstring)."""
  check_layout(name, layout)
  spec = SPECS[name]
  manual_dir = pathlib.Path(manual_dir)
  instructions = (f'The accepted layouts are below and in --dataset {name} '
                  '--instructions')
  if not manual_dir.is_dir():
    raise _no_layout_error(
        spec, manual_dir, f'manual_dir {manual_dir} is not a folder',
        "Pass the unpacked download's folder as --manual_dir; where to get "
        f'it: --dataset {name} --instructions.')
  side_hint = ''
  if layout == 'auto' and spec.layouts('side_by_side'):
    side_hint = (', or pass --layout side_by_side if each image is a rainy '
                 'and a clean image side by side')
  mode_note = ' for --layout side_by_side' if layout == 'side_by_side' else ''
  found = _spa_list_files(manual_dir) if name == 'spa_data' else {}
  for split, candidates in spec.split_folders.items():
    if split in found:
      continue
    list_file = layouts.find_child(manual_dir, f'{split}.txt')
    if spec.paired and list_file is not None and list_file.is_file():
      found[split] = layouts.read_list_file(list_file)
      continue
    for candidate in candidates:
      folder = layouts.find_child(manual_dir, candidate)
      if folder is None or not folder.is_dir():
        continue
      if name == 'rain1400' and candidate == '.':
        pairs = _ddn_by_scene(folder, split)
        if pairs is None:
          continue
      else:
        pairs = _find_pairs(spec, folder, layout)
        if pairs is None:
          if candidate == '.':
            continue
          raise _no_layout_error(
              spec, folder, f'split {split!r}: {folder} is in none of the '
              f'accepted layouts{mode_note}',
              f'Arrange it in one of them{side_hint}. {instructions}.')
      found[split] = pairs
      break
  if not found:
    raise _no_layout_error(
        spec, manual_dir, f'no split folder of {name} found in {manual_dir}',
        f'Put the splits in the folders named below{side_hint}. '
        f'{instructions}.')
  if name == 'rain100h' and 'train' in found:
    prenet_train = prenet_train_split(found['train'], found.get('test'),
                                      manual_dir)
    if prenet_train is not None:
      found['train_1254'] = prenet_train
  return found
