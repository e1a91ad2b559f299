"""uint8 pixels <-> float32 [0, 1]: the one rounding rule of the project.

A saved PNG, the y_uint8 protocol and every panel round the same way (half
up after clipping, like MATLAB's im2uint8), so a PNG on disk scores exactly
what the metrics reported. Both functions take numpy or jax arrays and return
the same kind; inside `jax.jit` pass jax arrays.
"""
import jax.numpy as jnp
import numpy as np


def _array_module(values):
  return np if isinstance(values, (np.ndarray, np.generic, int, float)) else jnp


def to_float(pixels):
  """uint8 (or 0..255 integer-valued) [..., C] -> float32 in [0, 1]."""
  xp = _array_module(pixels)
  return xp.asarray(pixels, xp.float32) / 255.0


def to_uint8(images):
  """float [0, 1] [..., C] -> uint8 [..., C], clipped, rounded half up."""
  xp = _array_module(images)
  images = xp.asarray(images, xp.float32)
  return xp.floor(xp.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(xp.uint8)
