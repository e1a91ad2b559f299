"""Panels to look at: images side by side under labels, and error maps.

Inputs and outputs are uint8 RGB [H, W, 3] unless a docstring says float.
"""
import numpy as np
from PIL import Image
from PIL import ImageDraw

from dcsfn_jax.metrics.pixels import to_float

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
