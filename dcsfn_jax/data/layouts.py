"""Finding rainy/clean pairs in the layouts that deraining datasets ship in.

Every finder looks at one folder and returns the pairs it holds, or None when
the folder is not in that layout. A folder that is in a layout but broken (a
rainy image without its clean partner, an unreadable list line) raises
`DatasetLayoutError` naming the files. Finders do not open images; the builder
checks sizes and decodability while it writes, through `open_image`, which
every reader of a user's image uses so that a corrupt file gets one message.
Which names are images, the `Pair` type and the pairing of two sides by key
belong to `dcsfn_jax.images.files`; each layout here supplies its keys.

Accepted layouts (REFERENCE §5):
  prenet        rain-N.png with norain-N.png, in one folder, or the rainy ones
                in a `rainy/` subfolder.
  x2            rain/X2/norain-Nx2.png (rainy) with norain/norain-N.png.
  input_target  input/NAME with target/NAME (identical names; also the folder
                pairs rain/gt, rainy/gt and rainy/clean).
  in_gt         NAME_in.png with NAME_GT.png (Rain12 as distributed).
  ddn           rainy_image/I_J.jpg with ground_truth/I.jpg (DDN, Rain1400).
  side_by_side  one image per pair, the halves side by side; which half is
                clean depends on the dataset. Found on its own only for the
                datasets distributed that way, and never in a folder whose
                names pair up (rainy_N with clean_N): those are separate files
                in an unknown layout (`names_pair_up`).
  list_file     a text file, one "rainy_path clean_path" per line (SPA-Data);
                relative paths are relative to the list file's folder.
  unpaired      a folder of rainy photos without ground truth.
"""
import collections
import contextlib
import os
import pathlib
import re
from typing import Callable, Iterator, Sequence

from PIL import Image

from dcsfn_jax.images import files as image_files
from dcsfn_jax.images.files import Pair
from dcsfn_jax.images.files import list_images


class PrepareError(ValueError):
  """A dataset cannot be prepared as asked; the message's first line says
  why and how to fix it (`prepare` prints it as its `error:` line)."""


class DatasetLayoutError(PrepareError):
  """The manual files are missing, in no accepted layout, or inconsistent."""


REPLACE_IMAGE = ('Replace it with a good copy from the download, or delete it '
                 'and its partner.')


@contextlib.contextmanager
def open_image(path: pathlib.Path, fix: str = REPLACE_IMAGE
               ) -> Iterator[Image.Image]:
  """`path` opened and fully decoded; if that fails, a DatasetLayoutError
  naming the file and `fix`."""
  try:
    with image_files.open_image(path) as image:
      yield image
  except image_files.UnreadableImageError as error:
    raise _corrupt(path, error.__cause__, fix) from error.__cause__


def _corrupt(path, error, fix) -> DatasetLayoutError:
  return DatasetLayoutError(
      f'{path} is corrupt, truncated or not an image ({error}). {fix}')


def find_child(folder: pathlib.Path, relative: str) -> pathlib.Path | None:
  """`folder/relative`, matching each component case-insensitively."""
  current = folder
  for part in pathlib.PurePosixPath(relative).parts:
    if part == '.':
      continue
    if not current.is_dir():
      return None
    exact = current / part
    if exact.exists():
      current = exact
      continue
    matches = [c for c in current.iterdir() if c.name.lower() == part.lower()]
    if not matches:
      return None
    current = matches[0]
  return current


def describe_folder(folder: pathlib.Path, limit: int = 12) -> str:
  """A short listing of a folder's entries, for error messages."""
  if not folder.exists():
    return f'{folder} does not exist'
  if not folder.is_dir():
    return f'{folder} is a file, not a folder'
  entries = sorted(folder.iterdir())
  if not entries:
    return f'{folder} is empty'
  shown = [e.name + ('/' if e.is_dir() else '') for e in entries[:limit]]
  more = f' ... and {len(entries) - limit} more' if len(entries) > limit else ''
  images = list_images(folder)
  counts = f' ({describe_names(images)})' if images else ''
  return f'{folder} holds [{", ".join(shown)}]{more}{counts}'


def _name_pattern(name: str) -> str:
  return re.sub(r'\d+', 'N', name.lower())


def describe_names(images: Sequence[pathlib.Path], limit: int = 4) -> str:
  """Counts of the name patterns (digit runs read as N), e.g. '8 files like
  rainy_N.png, 8 like clean_N.png'."""
  counts = collections.Counter(_name_pattern(p.name) for p in images)
  parts = [f'{n} like {pattern}' for pattern, n in counts.most_common(limit)]
  noun = 'file' if parts[0].startswith('1 ') else 'files'
  parts[0] = parts[0].replace(' like ', f' {noun} like ', 1)
  rest = len(images) - sum(n for _, n in counts.most_common(limit))
  return ', '.join(parts + ([f'{rest} others'] if rest else []))


_ROLE_WORDS = re.compile(r'norain|rainy|rain|clean|gt|target|input|label')


def _partner_keys(path: pathlib.Path) -> list[tuple[str, object, object]]:
  """(kind, key, variant): images with one key but two variants are
  partners. By number: rainy_3 and clean_3; by role word: street_rain and
  street_gt."""
  stem = path.stem.lower()
  keys = [('role', _ROLE_WORDS.sub('', stem), tuple(_ROLE_WORDS.findall(stem)))]
  numbers = tuple(int(n) for n in re.findall(r'\d+', stem))
  if numbers:
    keys.append(('number', numbers, _name_pattern(stem)))
  return keys


def names_pair_up(images: Sequence[pathlib.Path]) -> bool:
  """Whether at least half the images have a partner by name, so that they
  are separate rainy and clean files rather than side-by-side pairs."""
  variants = collections.defaultdict(set)
  for path in images:
    for kind, key, variant in _partner_keys(path):
      variants[kind, key].add(variant)
  partnered = sum(any(len(variants[kind, key]) > 1
                      for kind, key, _ in _partner_keys(path))
                  for path in images)
  return bool(images) and 2 * partnered >= len(images)


def _unmatched_error(layout: str, rainy_only: Sequence[pathlib.Path],
                     clean_only: Sequence[pathlib.Path]) -> DatasetLayoutError:
  lines = [f'{layout} layout: some images have no partner.']
  if rainy_only:
    lines.append('Rainy images without a clean image: ' +
                 ', '.join(str(p) for p in rainy_only[:10]) +
                 (f' (+{len(rainy_only) - 10} more)' if len(rainy_only) > 10
                  else ''))
  if clean_only:
    lines.append('Clean images without a rainy image: ' +
                 ', '.join(str(p) for p in clean_only[:10]) +
                 (f' (+{len(clean_only) - 10} more)' if len(clean_only) > 10
                  else ''))
  lines.append('Add the missing partners or remove the strays, then rerun.')
  return DatasetLayoutError('\n'.join(lines))


def _match_by_key(layout: str, rainy: dict, clean: dict,
                  name_of: Callable[[object], str],
                  allowed_unused_clean: int = 0) -> list[Pair]:
  matched, rainy_only, clean_only = image_files.match_keys(rainy, clean)
  if len(clean_only) == allowed_unused_clean and not rainy_only:
    clean_only = []
  if rainy_only or clean_only:
    raise _unmatched_error(layout, rainy_only, clean_only)
  return [Pair(name_of(k), rainy_path, clean_path, 'file')
          for k, rainy_path, clean_path in matched]


def _numbered(folder: pathlib.Path, pattern: str) -> dict[int, pathlib.Path]:
  regex = re.compile(pattern, re.IGNORECASE)
  found = {}
  for path in list_images(folder):
    match = regex.fullmatch(path.stem)
    if match:
      found[int(match.group(1))] = path
  return found


def find_prenet(folder: pathlib.Path,
                allowed_unused_clean: int = 0) -> list[Pair] | None:
  """PReNet names; exactly `allowed_unused_clean` clean images may lack a
  rainy partner (PReNet's RainTrainH deleted 546 rainy images, not always
  their backgrounds)."""
  rainy_folder = find_child(folder, 'rainy') or folder
  rainy = _numbered(rainy_folder, r'rain-(\d+)')
  if rainy_folder != folder:
    rainy.update(_numbered(folder, r'rain-(\d+)'))
  if not rainy:
    return None
  clean = _numbered(folder, r'norain-(\d+)')
  clean_folder = find_child(folder, 'norain')
  if clean_folder is not None:
    clean.update(_numbered(clean_folder, r'norain-(\d+)'))
  return _match_by_key('PReNet (rain-N / norain-N)', rainy, clean,
                       lambda k: f'rain-{k}', allowed_unused_clean)


def find_x2(folder: pathlib.Path) -> list[Pair] | None:
  rain_folder = find_child(folder, 'rain/X2') or find_child(folder, 'rain')
  clean_folder = find_child(folder, 'norain')
  if rain_folder is None or clean_folder is None:
    return None
  rainy = _numbered(rain_folder, r'norain-(\d+)x2')
  if not rainy:
    return None
  clean = _numbered(clean_folder, r'norain-(\d+)')
  return _match_by_key('x2 (rain/X2/norain-Nx2 / norain/norain-N)', rainy,
                       clean, lambda k: f'norain-{k}')


INPUT_TARGET_FOLDERS = (('input', 'target'), ('rain', 'gt'), ('rainy', 'gt'),
                        ('rainy', 'clean'))


def find_input_target(folder: pathlib.Path) -> list[Pair] | None:
  for input_name, target_name in INPUT_TARGET_FOLDERS:
    input_folder = find_child(folder, input_name)
    target_folder = find_child(folder, target_name)
    if input_folder is None or target_folder is None:
      continue
    rainy = {p.stem: p for p in list_images(input_folder)}
    clean = {p.stem: p for p in list_images(target_folder)}
    if rainy or clean:
      return _match_by_key(f'{input_name}/{target_name}', rainy, clean, str)
  return None


def find_in_gt(folder: pathlib.Path) -> list[Pair] | None:
  rainy = {}
  clean = {}
  for path in list_images(folder):
    stem = path.stem
    if stem.lower().endswith('_in'):
      rainy[stem[:-3]] = path
    elif stem.lower().endswith('_gt'):
      clean[stem[:-3]] = path
  if not rainy:
    return None
  return _match_by_key('NAME_in / NAME_GT', rainy, clean, str)


def find_ddn(folder: pathlib.Path,
             keep: Callable[[int], bool] = lambda image_id: True
             ) -> list[Pair] | None:
  """DDN: rainy_image/I_J.jpg (J-th streak variant of scene I), ground_truth/I.jpg."""
  rainy_folder = find_child(folder, 'rainy_image')
  clean_folder = find_child(folder, 'ground_truth')
  if rainy_folder is None or clean_folder is None:
    return None
  clean = {k: p for k, p in _numbered(clean_folder, r'(\d+)').items()
           if keep(k)}
  variant = re.compile(r'(\d+)_(\d+)')
  pairs, orphans = [], []
  for path in list_images(rainy_folder):
    match = variant.fullmatch(path.stem)
    if not match or not keep(int(match.group(1))):
      continue
    scene = int(match.group(1))
    if scene not in clean:
      orphans.append(path)
      continue
    pairs.append(Pair(path.stem, path, clean[scene], 'file'))
  used = {int(variant.fullmatch(p.rainy.stem).group(1)) for p in pairs}
  unused = [clean[k] for k in sorted(clean.keys() - used)]
  if orphans or unused:
    raise _unmatched_error('DDN (rainy_image/I_J / ground_truth/I)', orphans,
                           unused)
  return pairs or None


def find_side_by_side(folder: pathlib.Path, clean_side: str,
                      density: str = '', check_names: bool = True
                      ) -> list[Pair] | None:
  """Each image a pair; with `check_names`, None for names that pair up."""
  images = list_images(folder)
  if not images or (check_names and names_pair_up(images)):
    return None
  return [Pair(p.stem, p, None, clean_side, density) for p in images]


def find_unpaired(folder: pathlib.Path) -> list[Pair] | None:
  images = list_images(folder)
  if not images:
    return None
  return [Pair(p.stem, p, None, 'none') for p in images]


def _resolve_listed(list_file: pathlib.Path, line_number: int,
                    listed: str) -> pathlib.Path:
  candidate = pathlib.Path(listed)
  if candidate.is_absolute() and candidate.is_file():
    return candidate
  # SPA-Data's lists start paths with '/', relative to the dataset folder.
  relative = listed.lstrip('/\\')
  for base in (list_file.parent, list_file.parent.parent):
    if (base / relative).is_file():
      return base / relative
  raise DatasetLayoutError(
      f'{list_file}, line {line_number}: {listed!r} is not a file (looked in '
      f'{list_file.parent} and {list_file.parent.parent}). Fix the path or '
      'put the image there.')


def looks_like_list_file(path: pathlib.Path) -> bool:
  """A .txt file whose first line is two image paths."""
  if path.suffix.lower() != '.txt' or not path.is_file():
    return False
  with path.open(errors='replace') as lines:
    first = next((line for line in lines if line.strip()), '').split()
  return len(first) == 2 and all(
      pathlib.PurePath(p).suffix.lower() in image_files.IMAGE_SUFFIXES
      for p in first)


def read_list_file(list_file: pathlib.Path) -> list[Pair]:
  """Pairs from a list file with "rainy_path clean_path" per line."""
  pairs = []
  for number, line in enumerate(list_file.read_text().splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2:
      raise DatasetLayoutError(
          f'{list_file}, line {number}: expected "rainy_path clean_path", got '
          f'{line!r}.')
    rainy = _resolve_listed(list_file, number, fields[0])
    clean = _resolve_listed(list_file, number, fields[1])
    name = os.path.splitext(fields[0].lstrip('/\\'))[0].replace('\\', '/')
    pairs.append(Pair(name, rainy, clean, 'file'))
  if not pairs:
    raise DatasetLayoutError(f'{list_file} lists no pairs.')
  return pairs
