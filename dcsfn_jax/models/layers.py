"""Building blocks shared by the DCSFN modules: convs, pooling, legacy resize.

Every conv matches the released code: bias, stride 1, zero padding (3x3: 1,
1x1: 0) and PyTorch's default initialisation, U(-1/sqrt(fan_in), +1/sqrt(fan_in))
for kernel and bias, so training from scratch starts from the same distribution.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LEAKY_SLOPE = 0.2


def leaky_relu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, LEAKY_SLOPE)


def _uniform_fan_in(fan_in: int):
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _plain_conv(x, kernel, padding, groups, precision):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=_NHWC,
      feature_group_count=groups, precision=precision)


# Output positions per piece of a tiled weight gradient; see `_weight_grad`.
_WEIGHT_GRAD_TILE = 4096
_WEIGHT_GRAD_TILE_IMAGES = 4


def _weight_grad(x, grad, padding, precision):
  """dW [kh, kw, Cin, Cout] of a stride-1 NHWC x HWIO conv (dense, groups=1).

  x's channels act as the batch and its images as the contracted features, so
  each piece is again an NHWC x HWIO conv, the form XLA's CPU backend runs
  fast inside loop bodies too. Its "kernel" is the whole output gradient, so
  large inputs are cut into tiles of whole output rows x up to 4 images
  (~2,048 output positions each) whose float32 results are summed: they stay
  in cache, and ran 1.4x (16x64x64) to 1.6x (16x32x32) faster than one piece
  inside a scan (benchmarks/conv_grad.py).
  """
  (top, bottom), (left, right) = padding
  batch, _, _, in_channels = x.shape
  _, out_height, out_width, _ = grad.shape
  x_t = x.transpose(3, 1, 2, 0)        # [Cin, H, W, B]
  grad_t = grad.transpose(1, 2, 0, 3)  # [Ho, Wo, B, Cout]
  if batch * out_height * out_width <= _WEIGHT_GRAD_TILE or in_channels < 8:
    return _plain_conv(x_t, grad_t, padding, 1,
                       precision).transpose(1, 2, 0, 3)
  images = min(batch, _WEIGHT_GRAD_TILE_IMAGES)
  rows = max(1, min(out_height, _WEIGHT_GRAD_TILE // (out_width * images)))
  x_t = jnp.pad(x_t, ((0, 0), (top, bottom), (0, 0), (0, 0)))
  halo = x_t.shape[1] - out_height  # kernel height - 1
  total = 0.0
  for row in range(0, out_height, rows):
    row_end = min(row + rows, out_height)
    for image in range(0, batch, images):
      image_end = min(image + images, batch)
      total = total + _plain_conv(
          x_t[:, row:row_end + halo, :, image:image_end],
          grad_t[row:row_end, :, image:image_end], ((0, 0), (left, right)), 1,
          precision).astype(jnp.float32)
  return total.transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_canonical_grads(x, kernel, padding, groups, precision):
  return _plain_conv(x, kernel, padding, groups, precision)


def _conv_canonical_grads_fwd(x, kernel, padding, groups, precision):
  return _plain_conv(x, kernel, padding, groups, precision), (x, kernel)


def _conv_canonical_grads_bwd(padding, groups, precision, residuals, grad):
  x, kernel = residuals
  kh, kw, in_per_group, out_channels = kernel.shape
  out_per_group = out_channels // groups
  # Input gradient: correlate with the spatially flipped kernel whose in/out
  # channels are swapped within each group.
  flipped = kernel[::-1, ::-1].reshape(kh, kw, in_per_group, groups,
                                       out_per_group)
  flipped = flipped.transpose(0, 1, 4, 3, 2).reshape(
      kh, kw, out_per_group, groups * in_per_group)
  (top, bottom), (left, right) = padding
  grad_x = _plain_conv(grad, flipped,
                       ((kh - 1 - top, kh - 1 - bottom),
                        (kw - 1 - left, kw - 1 - right)), groups, precision)
  grad_kernel = _weight_grad(x, grad, padding, precision)
  if groups > 1:  # Keep the per-group diagonal blocks.
    blocks = grad_kernel.reshape(kh, kw, groups, in_per_group, groups,
                                 out_per_group)
    grad_kernel = jnp.stack([blocks[:, :, g, :, g] for g in range(groups)],
                            axis=3).reshape(kernel.shape)
  return grad_x, grad_kernel.astype(kernel.dtype)


_conv_canonical_grads.defvjp(_conv_canonical_grads_fwd,
                             _conv_canonical_grads_bwd)


def cpu_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
             rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
             precision=None):
  """`lax.conv_general_dilated` stand-in for stride-1 NHWC/HWIO convs on CPU.

  XLA's CPU backend only rewrites convolutions into its fast (Eigen) form in
  the top-level computation; the transposed-layout gradient convolutions that
  autodiff emits inside a loop body (the scanned dense blocks) otherwise run
  as naive loops. Here every gradient is itself an NHWC/HWIO conv, and 1x1
  convs are plain matrix products.
  """
  del window_strides, lhs_dilation, rhs_dilation, dimension_numbers
  padding = tuple(tuple(p) for p in padding)
  if rhs.shape[:2] == (1, 1) and feature_group_count == 1:
    return jax.lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())),
                               precision=precision)
  return _conv_canonical_grads(lhs, rhs, padding, feature_group_count,
                               precision)


def conv(features: int, kernel_size: int, *, in_features: int, name: str,
         groups: int = 1, dtype=jnp.float32) -> nn.Conv:
  """A torch-initialised `nn.Conv` (kernel HWIO, bias), 'same' zero padding."""
  fan_in = in_features // groups * kernel_size * kernel_size
  on_cpu = jax.default_backend() == 'cpu'
  return nn.Conv(
      features, (kernel_size, kernel_size), padding=(kernel_size - 1) // 2,
      feature_group_count=groups, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=_uniform_fan_in(fan_in), bias_init=_uniform_fan_in(fan_in),
      conv_general_dilated=cpu_conv if on_cpu else None, name=name)


conv3x3 = functools.partial(conv, kernel_size=3)
conv1x1 = functools.partial(conv, kernel_size=1)


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
