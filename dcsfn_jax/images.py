"""Image files in and out: robust reading, rounded PNG writing, panels.

Inside the project images are float32 RGB in [0, 1] or uint8 RGB [H, W, 3].
`read_image` turns whatever a user's folder holds (gray, RGBA, palette,
16-bit, CMYK JPEG, EXIF-rotated camera JPEGs) into uint8 RGB as it is meant
to be displayed; `write_png` rounds floats exactly as the y_uint8 protocol
does, so a saved PNG scores what the metrics reported.
"""
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageOps
from PIL import PngImagePlugin

from dcsfn_jax.metrics.pixels import to_float
from dcsfn_jax.metrics.pixels import to_uint8

# Error-map colours from no error (black) through purple and orange to
# yellow-white at the full-scale error.
_ERROR_COLOURS = np.array([
    [0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164],
], np.float64)

# Mean absolute error (on [0, 1]) drawn at full brightness in error maps; a
# fixed scale keeps maps comparable across images.
ERROR_MAP_FULL_SCALE = 0.25

_LABEL_HEIGHT = 16
_GAP = 4


class UnreadableImageError(ValueError):
  """A file that is not an image we can decode; the message names it."""


def _high_bit_depth_to_uint8(pixels):
  """Integer or float pixels of a 16/32-bit or float image -> uint8."""
  if pixels.dtype.kind == 'f':
    scale = 1.0 if np.nanmax(pixels, initial=0.0) <= 1.0 else 255.0
    return to_uint8(np.nan_to_num(pixels) / scale)
  # PIL's 'I' modes hold 16-bit files as 0..65535.
  peak = 255.0 if pixels.max(initial=0) <= 255 else 65535.0
  return to_uint8(pixels.astype(np.float64) / peak)


def read_image(path):
  """Reads any common image file as displayed: uint8 RGB [H, W, 3].

  EXIF orientation is applied; alpha is discarded (the colours under it are
  kept); gray, palette, CMYK and 16-bit images are converted to 8-bit RGB
  (16-bit gray is rounded, 16-bit colour truncated by PIL to its top byte).

  Raises:
    UnreadableImageError: naming the file and why, for anything else.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      image.load()
  except Exception as error:  # PIL raises many types for broken files
    raise UnreadableImageError(
        f'{path}: not a readable image ({type(error).__name__}: {error}).'
    ) from error
  try:
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F'):
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


def pixel_count(path):
  """Width x height from the file's header, without decoding the pixels.

  Raises:
    UnreadableImageError: naming the file, when it is not an image.
  """
  path = os.fspath(path)
  try:
    with Image.open(path) as image:
      width, height = image.size
  except Exception as error:  # PIL raises many types for broken files
    raise UnreadableImageError(
        f'{path}: not a readable image ({type(error).__name__}: {error}).'
    ) from error
  return width * height, (width, height)


def error_map(derained, clean, full_scale=ERROR_MAP_FULL_SCALE):
  """Per-pixel mean absolute error, colour coded: uint8 RGB [H, W, 3].

  Args:
    derained, clean: float [H, W, 3] in [0, 1] (derained is clipped).
    full_scale: the error shown at full brightness (errors above saturate).
  """
  error = np.mean(np.abs(np.clip(derained, 0, 1) - np.clip(clean, 0, 1)),
                  axis=-1)
  position = np.clip(error / full_scale, 0, 1) * (len(_ERROR_COLOURS) - 1)
  lower = np.minimum(np.floor(position).astype(int), len(_ERROR_COLOURS) - 2)
  fraction = (position - lower)[..., None]
  colours = ((1 - fraction) * _ERROR_COLOURS[lower]
             + fraction * _ERROR_COLOURS[lower + 1])
  return np.round(colours).astype(np.uint8)


def panel(images, labels):
  """Side-by-side panel of uint8 RGB images, each under a text label.

  Args:
    images: list of uint8 [H_i, W_i, 3] (shorter ones are padded at the
      bottom with white).
    labels: one string per image.

  Returns:
    uint8 RGB [max H + label strip, sum W + gaps, 3] on white.
  """
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels.')
  height = max(image.shape[0] for image in images) + _LABEL_HEIGHT
  width = sum(image.shape[1] for image in images) + _GAP * (len(images) - 1)
  canvas = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(canvas)
  left = 0
  for image, label in zip(images, labels):
    canvas.paste(Image.fromarray(np.asarray(image, np.uint8)),
                 (left, _LABEL_HEIGHT))
    draw.text((left + 2, 2), label, fill='black')
    left += image.shape[1] + _GAP
  return np.asarray(canvas)


def evaluation_panel(rainy, derained, clean):
  """rainy | derained | clean | error map, labelled: uint8 RGB.

  Args:
    rainy, derained, clean: uint8 [H, W, 3] RGB (derained as saved).
  """
  error = error_map(to_float(derained), to_float(clean))
  return panel([rainy, derained, clean, error],
               ['rainy', 'derained', 'clean',
                f'mean |error| (yellow = {ERROR_MAP_FULL_SCALE:g})'])


def output_name(name):
  """A flat file name ending in .png for an example name ('a/b.jpg' ->
  'a_b.png')."""
  stem = os.path.splitext(os.fspath(name))[0].replace('/', '_').replace(
      '\\', '_').lstrip('._')
  if not stem:
    raise ValueError(f'Cannot derive an output file name from {name!r}.')
  return stem + '.png'
