"""Image files: which names are images, reading, writing, pairing by name.

The one module of the package that opens image files. Inside the project
images are float32 RGB in [0, 1] or uint8 RGB [H, W, 3]. `read_image` turns
whatever a user's folder holds (gray, RGBA, palette, 16-bit, CMYK JPEG,
EXIF-rotated camera JPEGs) into uint8 RGB as it is meant to be displayed,
under an optional pixel budget checked from the header before decoding;
`read_scored_image` also rounds 16-bit colour PNGs as MATLAB's im2uint8 does;
`write_png` rounds floats exactly as the y_uint8 protocol does, so a saved PNG
scores what the metrics reported, and marks the file as this project's, which
is what `--overwrite` checks (`is_our_output`, for `paths.refusal_to_replace`).

Pairing by name (`match_files`), tried in this order; the first rule that
pairs every file of both sides one to one wins:
  1. identical stems: results/Rain100H/1.png with target/1.png (Restormer,
     MPRNet, DRSformer's Rain200H/L and SPA-Data: they save each output under
     its input's stem).
  2. naming conventions: the stems agree once role words and leading zeros
     are dropped: PReNet's rain-001 / norain-001 (and norain-001x2), suffixes
     such as 1_DR / 1_GT (DRSformer's DID-Data/DDN-Data results, both in one
     folder), _derained, _out, _pred, _restored, _gt, _clean, _target, _in.
  3. the same after dropping a suffix that every output shares: BasicSR's
     NAME_{suffix or run name}.png against NAME.png.
Otherwise a ValueError lists the first unmatched files of each side.
`match_keys` is the step every pairing shares (score's rules here, and each
dataset layout's own keys in `data.layouts`): files whose keys agree pair up,
and the rest are named.
"""
import contextlib
import dataclasses
import hashlib
import io
import os
import pathlib
import re

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import PngImagePlugin

from dcsfn_jax.metrics.pixels import to_uint8

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')

# Longest file-name stem written, in UTF-8 bytes: file systems allow 255
# bytes per name, and the stem still gets '.png' and perhaps a count.
_MAX_STEM_BYTES = 200


class UnreadableImageError(ValueError):
  """A file that is not an image we can decode; the message names it."""


class TooManyPixelsError(UnreadableImageError):
  """An image whose header gives more pixels than the reader's budget."""

  def __init__(self, path, size, max_pixels):
    width, height = size
    self.path, self.size, self.max_pixels = path, size, max_pixels
    self.megapixels = width * height / 1e6
    super().__init__(f'{path}: {width}x{height} is {self.megapixels:.1f} '
                     f'megapixels, above the limit of {max_pixels}.')


# ---------------------------------------------------------------- listing

def is_image(path):
  """Whether `path` is a file with an image suffix (any case)."""
  path = pathlib.Path(path)
  return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder):
  """The image files directly in `folder`, sorted; [] for no folder."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    return []
  return sorted(path for path in folder.iterdir() if is_image(path))


# ---------------------------------------------------------------- reading

def _unreadable(path, error):
  return UnreadableImageError(
      f'{path}: not a readable image ({type(error).__name__}: {error}).')


@contextlib.contextmanager
def open_image(path):
  """`path` opened and fully decoded as a PIL image, for the body.

  Raises:
    UnreadableImageError: naming the file; the decoder's own exception is
      its __cause__.
  """
  path = os.fspath(path)
  try:
    image = Image.open(path)
  except Exception as error:  # PIL raises many types for broken files
    raise _unreadable(path, error) from error
  with image:
    try:
      image.load()
    except Exception as error:  # pylint: disable=broad-except
      raise _unreadable(path, error) from error
    yield image


def decode_rgb(encoded):
  """uint8 [H, W, 3] RGB from encoded image bytes (gray, palette, alpha ->
  RGB)."""
  with Image.open(io.BytesIO(encoded)) as image:
    return np.asarray(image.convert('RGB'))


@contextlib.contextmanager
def _without_bomb_guard():
  """PIL's decompression-bomb guard off for the body: the caller reads
  only the header, or has checked the pixel count from it."""
  default = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None
  try:
    yield
  finally:
    Image.MAX_IMAGE_PIXELS = default


def pixel_count(path):
  """(width x height, (width, height)) from the file's header, without
  decoding the pixels.

  Raises:
    UnreadableImageError: naming the file, when it is not an image.
  """
  path = os.fspath(path)
  try:
    with _without_bomb_guard(), Image.open(path) as image:
      width, height = image.size
  except Exception as error:  # PIL raises many types for broken files
    raise _unreadable(path, error) from error
  return width * height, (width, height)


def _high_bit_depth_to_uint8(pixels):
  """Integer or float pixels of a 16/32-bit or float image -> uint8."""
  if pixels.dtype.kind == 'f':
    scale = 1.0 if np.nanmax(pixels, initial=0.0) <= 1.0 else 255.0
    return to_uint8(np.nan_to_num(pixels) / scale)
  # PIL's 'I' modes hold 16-bit files as 0..65535.
  peak = 255.0 if pixels.max(initial=0) <= 255 else 65535.0
  return to_uint8(pixels.astype(np.float64) / peak)


_SIXTEEN_BIT_GRAY = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N')


def read_image(path, max_pixels=None):
  """Reads any common image file as displayed: uint8 RGB [H, W, 3].

  EXIF orientation is applied; alpha is discarded (the colours under it are
  kept); gray, palette, CMYK and 16-bit images are converted to 8-bit RGB
  (16-bit gray is rounded, 16-bit colour truncated by PIL to its top byte;
  `read_scored_image` rounds it).

  Args:
    path: the file.
    max_pixels: the pixel budget, checked from the header before anything
      is decoded (0: none); it replaces PIL's fixed decompression-bomb
      guard, which applies when this is None.

  Raises:
    TooManyPixelsError: above `max_pixels`.
    UnreadableImageError: naming the file and why, for anything else.
  """
  path = os.fspath(path)
  if max_pixels:
    pixels, size = pixel_count(path)
    if pixels > max_pixels:
      raise TooManyPixelsError(path, size, max_pixels)
  guard = (contextlib.nullcontext() if max_pixels is None
           else _without_bomb_guard())
  try:
    with guard, Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      image.load()
  except Exception as error:  # PIL raises many types for broken files
    raise _unreadable(path, error) from error
  try:
    if image.mode in _SIXTEEN_BIT_GRAY + ('F',):
      gray = _high_bit_depth_to_uint8(np.asarray(image))
      return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == 'P' and 'transparency' in image.info:
      image = image.convert('RGBA')
    if image.mode == 'LAB':
      raise UnreadableImageError(
          f'{path}: CIELAB images are not supported; convert it to RGB '
          'first.')
    return np.asarray(image.convert('RGB'), np.uint8)
  except UnreadableImageError:
    raise
  except Exception as error:  # PIL's converters raise several types
    raise UnreadableImageError(
        f'{path}: cannot convert {image.mode} pixels to RGB '
        f'({type(error).__name__}: {error}).') from error


# Pillow's EXIF orientation -> transpose (as ImageOps.exif_transpose).
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT,
                3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


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
  """A saved output as uint8 RGB [H, W, 3], and whether it had 16 bits.

  As `read_image`, except that 16-bit colour PNGs (BasicSR's tensor2img
  with out_type=np.uint16) are decoded to their full 16 bits and rounded to
  8 as MATLAB's im2uint8: (v + 128) // 257.

  Raises:
    UnreadableImageError: naming the file.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as image:
      mode = _sixteen_bit_colour_mode(image)
      orientation = image.getexif().get(0x0112, 1) if mode else 1
      sixteen_bit_gray = image.mode in _SIXTEEN_BIT_GRAY
  except Exception:  # pylint: disable=broad-except  # read_image explains
    return read_image(path), False
  if mode is None:
    # read_image rounds 16-bit gray as im2uint8 does.
    return read_image(path), sixteen_bit_gray
  try:
    high = _decode_png_bytes(path, f'{mode};16B').astype(np.uint32)
    low = _decode_png_bytes(path, f'{mode};16L').astype(np.uint32)
  except Exception as error:  # PIL raises many types for broken files
    raise UnreadableImageError(
        f'{path}: not a readable 16-bit PNG ({type(error).__name__}: '
        f'{error}).') from error
  rgb = (((high * 256 + low) + 128) // 257).astype(np.uint8)[..., :3]
  if orientation in _ORIENTATION:
    rgb = np.asarray(Image.fromarray(rgb).transpose(_ORIENTATION[orientation]))
  return rgb, True


# ---------------------------------------------------------------- writing

# The PNG text chunk that marks a file as written by this project, so that
# --overwrite replaces earlier outputs and never a user's own file.
_MARK_KEY = 'Software'
_MARK_VALUE = 'dcsfn_jax'


def write_png(path, image):
  """Writes an RGB image (float [0, 1], rounded half up, or uint8) as PNG,
  marked as this project's output (`is_our_output`)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = to_uint8(image)
  info = PngImagePlugin.PngInfo()
  info.add_text(_MARK_KEY, _MARK_VALUE)
  Image.fromarray(image).save(os.fspath(path), format='PNG', pnginfo=info)


def is_our_output(path):
  """Whether `path` is a PNG that `write_png` wrote."""
  try:
    with Image.open(os.fspath(path)) as image:
      return (image.format == 'PNG'
              and image.info.get(_MARK_KEY) == _MARK_VALUE)
  except Exception:  # pylint: disable=broad-except  # not an image at all
    return False


def _short_stem(stem):
  """`stem`, or when longer than _MAX_STEM_BYTES its head and a hash of the
  whole, so that distinct long names stay distinct."""
  encoded = stem.encode('utf-8', 'surrogateescape')
  if len(encoded) <= _MAX_STEM_BYTES:
    return stem
  digest = hashlib.sha1(encoded).hexdigest()[:8]
  head = encoded[:_MAX_STEM_BYTES - 9].decode('utf-8', 'ignore')
  return f'{head}_{digest}'


def output_name(name):
  """A flat file name ending in .png for an example name ('a/b.jpg' ->
  'a_b.png'), short enough for any file system (long stems are cut and
  keep a hash of the whole)."""
  stem = os.path.splitext(os.fspath(name))[0].replace('/', '_').replace(
      '\\', '_').lstrip('._')
  if not stem:
    raise ValueError(f'Cannot derive an output file name from {name!r}.')
  return _short_stem(stem) + '.png'


# ---------------------------------------------------------------- pairing

@dataclasses.dataclass(frozen=True)
class Pair:
  """One example as found on disk: its name and files.

  `clean_side` says where the clean image is: 'file' (its own file, `clean`),
  'left' or 'right' (a half of the side-by-side `rainy` file) or 'none'
  (unpaired real rain). `derained` is a method's saved output (`score`).
  """
  name: str
  rainy: pathlib.Path | str | None
  clean: pathlib.Path | str | None
  clean_side: str = 'file'
  density: str = ''
  derained: pathlib.Path | str | None = None


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


def stem(path):
  """The file name without its folder and suffix."""
  return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def role_of(name_stem):
  """'clean', 'rainy', 'derained' or None, from a file name's stem alone
  (norain-N, NAME_GT: clean; rain-N, NAME_rain: rainy; NAME_DR: derained)."""
  for role in ('clean', 'rainy'):
    if _PREFIXES[role].search(name_stem):
      return role
  for role in ('clean', 'rainy', 'derained'):
    if _SUFFIXES[role].search(name_stem):
      return role
  return None


def _convention_key(name_stem, roles):
  """`name_stem` without the prefixes/suffixes of `roles`, lower case, digit
  runs without leading zeros: rain-001 -> '1', 1_GT -> '1', norain-3x2 ->
  '3'."""
  name_stem = _X2.sub('', name_stem)
  for role in roles:
    for pattern in (_PREFIXES.get(role), _SUFFIXES[role]):
      if pattern is not None:
        name_stem = pattern.sub('', name_stem)
  return re.sub(r'\d+', lambda m: str(int(m.group())), name_stem.lower())


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


def match_keys(first, second):
  """Pairs two {key: file} maps by key.

  Returns:
    ([(key, first file, second file)] sorted by key, the first side's files
    without a partner, the second side's), the unpaired ones sorted by key.
  """
  common = sorted(first.keys() & second.keys())
  return ([(k, first[k], second[k]) for k in common],
          [first[k] for k in sorted(first.keys() - second.keys())],
          [second[k] for k in sorted(second.keys() - first.keys())])


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
  rules = [('identical stems', stem, stem),
           ('naming conventions',
            lambda p: _convention_key(stem(p), output_roles),
            lambda p: _convention_key(stem(p), target_roles))]
  for suffix in _common_suffixes([stem(p) for p in outputs]):
    rules.append((f'naming conventions after dropping the suffix '
                  f'{suffix!r} all outputs share',
                  lambda p, n=len(suffix): _convention_key(stem(p)[:-n],
                                                           output_roles),
                  lambda p: _convention_key(stem(p), target_roles)))
  best = None
  for rule, output_key, target_key in rules:
    keyed_outputs, output_clashes = _keyed(outputs, output_key)
    keyed_targets, target_clashes = _keyed(targets, target_key)
    matched, lonely_outputs, lonely_targets = match_keys(keyed_outputs,
                                                         keyed_targets)
    if (not output_clashes and not target_clashes
        and len(matched) == len(outputs) == len(targets)):
      return sorted((output, target) for _, output, target in matched), rule
    unmatched = (sorted(lonely_outputs), sorted(lonely_targets),
                 output_clashes + target_clashes)
    if best is None or len(matched) > best[0]:
      best = (len(matched), rule, unmatched)
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
