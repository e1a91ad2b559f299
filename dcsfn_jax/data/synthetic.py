"""Rain-streak synthesiser in the style of Rain100L / Rain100H.

A streak layer is sparse noise smeared by an anti-aliased line kernel:

1. every pixel independently seeds a streak with probability `density`
   (seeds per pixel), with a brightness drawn uniformly from [0.5, 1];
2. the seeds are convolved with a line of `length` px and `width` px at
   `angle` degrees from vertical (positive: the lower end leans right);
3. the layer is clipped to [0, 1], scaled by `opacity` and blended onto the
   clean photo with 'screen' (1 - (1 - I)(1 - R)) or 'additive' (I + R,
   clipped) blending.

Streaks are seeded over a margin around the image so that streaks crossing the
border appear with the same density as interior ones. Everything is drawn from
a numpy Generator, so a seed fixes the result.
"""
import dataclasses
import math
from typing import Literal

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class RainStyle:
  """Controls of the streak layer; see the module docstring for their meaning."""
  density: float = 0.004     # streak seeds per pixel
  length: float = 20.0       # px, end to end
  width: float = 1.0         # px
  angle: float = 0.0         # degrees from vertical
  opacity: float = 0.7       # peak streak intensity, in [0, 1]
  blend: Literal['screen', 'additive'] = 'screen'

  def __post_init__(self):
    checks = {
        'density': 0.0 <= self.density <= 1.0,
        'length': self.length >= 1.0,
        'width': self.width > 0.0,
        'angle': -90.0 <= self.angle <= 90.0,
        'opacity': 0.0 <= self.opacity <= 1.0,
        'blend': self.blend in ('screen', 'additive'),
    }
    for field, ok in checks.items():
      if not ok:
        raise ValueError(
            f'RainStyle.{field}={getattr(self, field)!r} is out of range; '
            'density and opacity lie in [0, 1], length >= 1 px, width > 0 px, '
            "angle in [-90, 90] degrees, blend 'screen' or 'additive'.")


# Rain100L has sparse thin streaks; Rain100H dense, long and wide ones.
PRESETS = {
    'light': RainStyle(density=0.003, length=18.0, width=1.0, opacity=0.6),
    'heavy': RainStyle(density=0.005, length=30.0, width=1.8, opacity=0.7),
}


def line_kernel(length: float, width: float, angle: float) -> np.ndarray:
  """Anti-aliased line of the given length and width (px), peak 1, [k, k] float32."""
  radius = int(math.ceil((length + width) / 2)) + 1
  coords = np.arange(-radius, radius + 1, dtype=np.float64)
  y, x = np.meshgrid(coords, coords, indexing='ij')
  theta = math.radians(angle)
  along = x * math.sin(theta) + y * math.cos(theta)
  across = x * math.cos(theta) - y * math.sin(theta)
  # Coverage falls linearly over one pixel at the edges (cheap anti-aliasing).
  side_coverage = np.clip(width / 2 + 0.5 - np.abs(across), 0.0, 1.0)
  end_coverage = np.clip(length / 2 + 0.5 - np.abs(along), 0.0, 1.0)
  return (side_coverage * end_coverage).astype(np.float32)


def rain_layer(height: int, width: int, style: RainStyle,
               rng: np.random.Generator) -> np.ndarray:
  """Streak intensity layer, float32 [height, width] in [0, style.opacity]."""
  kernel = line_kernel(style.length, style.width, style.angle)
  margin = kernel.shape[0] // 2
  padded_shape = (height + 2 * margin, width + 2 * margin)
  seeded = rng.random(padded_shape) < style.density
  brightness = rng.uniform(0.5, 1.0, padded_shape)
  seeds = np.where(seeded, brightness, 0.0).astype(np.float32)
  if not seeded.any():
    return np.zeros((height, width), np.float32)
  # Circular FFT convolution: the margin is at least the kernel radius, so
  # wrapped-around streaks land only in the margin, which is cut away.
  spectrum = np.fft.rfft2(seeds) * np.fft.rfft2(kernel, s=padded_shape)
  smeared = np.roll(np.fft.irfft2(spectrum, s=padded_shape),
                    (-margin, -margin), axis=(0, 1))
  layer = np.clip(smeared[margin:margin + height, margin:margin + width], 0, 1)
  return (layer * style.opacity).astype(np.float32)


def blend_rain(clean: np.ndarray, layer: np.ndarray,
               blend: Literal['screen', 'additive']) -> np.ndarray:
  """Rainy image from clean float [H, W, 3] in [0, 1] and a layer [H, W]."""
  streaks = layer[..., None]
  if blend == 'screen':
    return 1.0 - (1.0 - clean) * (1.0 - streaks)
  return np.clip(clean + streaks, 0.0, 1.0)


def add_rain(clean: np.ndarray, style: RainStyle, seed: int) -> np.ndarray:
  """Rainy version of a uint8 RGB image [H, W, 3]; deterministic in `seed`."""
  rng = np.random.default_rng(seed)
  height, width = clean.shape[:2]
  layer = rain_layer(height, width, style, rng)
  rainy = blend_rain(clean.astype(np.float32) / 255.0, layer, style.blend)
  return np.round(rainy * 255.0).astype(np.uint8)


def dominant_streak_angle(layer: np.ndarray) -> float:
  """Streak orientation (degrees from vertical) from the gradient structure tensor.

  Gradients run across streaks, so the streak direction is the eigenvector of
  the summed structure tensor with the smaller eigenvalue. The layer is
  smoothed first: finite differences across a one-pixel ramp are anisotropic
  and would pull the estimate towards the diagonals.
  """
  smooth = ndimage.gaussian_filter(layer.astype(np.float64), sigma=2.0)
  grad_y, grad_x = np.gradient(smooth)
  tensor = np.array([[np.sum(grad_x * grad_x), np.sum(grad_x * grad_y)],
                     [np.sum(grad_x * grad_y), np.sum(grad_y * grad_y)]])
  _, vectors = np.linalg.eigh(tensor)
  dx, dy = vectors[:, 0]
  if dy < 0:
    dx, dy = -dx, -dy
  return math.degrees(math.atan2(dx, dy))
