"""Building blocks shared by the DCSFN modules: convs, pooling, legacy resize.

Every conv matches the released code: bias, stride 1, zero padding (3x3: 1,
1x1: 0) and PyTorch's default initialisation, U(-1/sqrt(fan_in), +1/sqrt(fan_in))
for kernel and bias, so training from scratch starts from the same distribution.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
import numpy as np

from dcsfn_jax.models import cpu_conv

LEAKY_SLOPE = 0.2


def accumulation_dtype(dtype: DTypeLike) -> jnp.dtype:
  """The dtype sums are kept in for compute `dtype`: float32 for float32 and
  bfloat16, float64 for float64 (a verification mode: JAX x64 only)."""
  return jnp.promote_types(dtype, jnp.float32)


def leaky_relu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, LEAKY_SLOPE)


def _uniform_fan_in(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# What the modules take as their `conv` field: (features, kernel_size, *,
# in_features, name, groups=1, dtype) -> nn.Module, `conv` or a value of
# CONVS. The caller chooses the implementation; no module reads the platform.
ConvFactory = Callable[..., nn.Module]


def conv(features: int, kernel_size: int, *, in_features: int, name: str,
         groups: int = 1, dtype: DTypeLike = jnp.float32,
         conv_general_dilated: Callable = jax.lax.conv_general_dilated
         ) -> nn.Conv:
  """A torch-initialised `nn.Conv` (kernel HWIO, bias), 'same' zero padding.

  conv_general_dilated: how the conv and its gradients are computed, with
  `lax.conv_general_dilated`'s signature; parameters are the same for any.
  """
  fan_in = in_features // groups * kernel_size * kernel_size
  return nn.Conv(
      features, (kernel_size, kernel_size), padding=(kernel_size - 1) // 2,
      feature_group_count=groups, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=_uniform_fan_in(fan_in), bias_init=_uniform_fan_in(fan_in),
      conv_general_dilated=conv_general_dilated, name=name)


# The model config's conv_impl -> the conv factory the modules get: 'xla'
# differentiates lax.conv_general_dilated; 'cpu' uses `cpu_conv`, whose
# gradients XLA:CPU runs fast inside the block scan.
CONVS = {'xla': conv,
         'cpu': functools.partial(
             conv, conv_general_dilated=cpu_conv.conv_general_dilated)}


def max_pool(x: jax.Array, factor: int) -> jax.Array:
  """Max pool NHWC with factor x factor windows, stride factor, 'VALID' (floors)."""
  if factor == 1:
    return x
  window = (1, factor, factor, 1)
  # A Python-scalar -inf selects the differentiable max-pool primitive; an
  # array init value would give the generic (non-differentiable) reduce.
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window,
                               'VALID')


@functools.lru_cache(maxsize=None)
def legacy_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of every output index under PyTorch's legacy 'nearest' rule.

  i when the sizes are equal, i // 2 when doubling, otherwise
  min(floor(float32(i) * float32(in / out)), in - 1), evaluated in float32 as
  ATen's float32 kernels do (float64 arithmetic disagrees on some pairs, and
  so does torch's float64 kernel, e.g. 64 -> 218).
  """
  positions = np.arange(out_size)
  if out_size == in_size:
    indices = positions
  elif out_size == 2 * in_size:
    indices = positions // 2
  else:
    scale = np.float32(in_size) / np.float32(out_size)
    indices = np.floor(positions.astype(np.float32) * scale).astype(np.int64)
    indices = np.minimum(indices, in_size - 1)
  indices = indices.astype(np.int32)
  indices.setflags(write=False)
  return indices


def _resize_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
  in_size = x.shape[axis]
  if in_size == out_size:
    return x
  indices = legacy_nearest_indices(in_size, out_size)
  positions = np.arange(out_size)
  # Exact integer ratios become repeat / strided slice: same values as the
  # gather, but their gradients are reshapes and sums rather than scatters.
  if out_size % in_size == 0:
    factor = out_size // in_size
    if np.array_equal(indices, positions // factor):
      return jnp.repeat(x, factor, axis=axis)
  if in_size % out_size == 0:
    factor = in_size // out_size
    if np.array_equal(indices, positions * factor):
      return jax.lax.slice_in_dim(x, 0, in_size, factor, axis=axis)
  return jnp.take(x, jnp.asarray(indices), axis=axis)


def resize_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
  """Resizes NHWC `x` to (height, width) with PyTorch's legacy nearest rule."""
  return _resize_axis(_resize_axis(x, 1, height), 2, width)


def resize_like(x: jax.Array, reference: jax.Array) -> jax.Array:
  """Resizes NHWC `x` to the spatial size of `reference`."""
  return resize_nearest(x, reference.shape[1], reference.shape[2])
