"""A `lax.conv_general_dilated` stand-in whose gradients suit XLA:CPU.

The model's convs are stride-1, undilated NHWC x HWIO convs. Autodiff of
`lax.conv_general_dilated` emits their gradients as convs in transposed
layouts, which XLA:CPU runs slowly inside loop bodies such as the scanned
dense blocks. `conv_general_dilated` here computes the same values with a
custom VJP in which every gradient is again a stride-1 NHWC x HWIO conv:
  input gradient   the output gradient correlated with the spatially flipped
                   kernel, in/out channels swapped within each group;
  weight gradient  x's channels as the batch and its images as the contracted
                   features, the output gradient as the kernel; for inputs of
                   more than WEIGHT_GRAD_TILE output positions (and >= 8
                   channels) summed in float32 (float64 for float64) over
                   tiles of whole output rows x up to
                   WEIGHT_GRAD_TILE_IMAGES images, about WEIGHT_GRAD_TILE
                   positions each, which stay in cache.
Unpadded 1x1 convs (groups=1) are matrix products, whose autodiff is fast.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NHWC = ('NHWC', 'HWIO', 'NHWC')
# Output positions per weight-gradient tile, and images per tile.
WEIGHT_GRAD_TILE = 4096
WEIGHT_GRAD_TILE_IMAGES = 4


def _plain_conv(x, kernel, padding, groups, precision):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), padding, dimension_numbers=NHWC,
      feature_group_count=groups, precision=precision)


def _weight_grad(x, grad, padding, precision):
  """dW [kh, kw, Cin, Cout] of a stride-1 NHWC x HWIO conv (dense, groups=1)."""
  (top, bottom), (left, right) = padding
  batch, _, _, in_channels = x.shape
  _, out_height, out_width, _ = grad.shape
  x_t = x.transpose(3, 1, 2, 0)        # [Cin, H, W, B]
  grad_t = grad.transpose(1, 2, 0, 3)  # [Ho, Wo, B, Cout]
  if batch * out_height * out_width <= WEIGHT_GRAD_TILE or in_channels < 8:
    return _plain_conv(x_t, grad_t, padding, 1,
                       precision).transpose(1, 2, 0, 3)
  images = min(batch, WEIGHT_GRAD_TILE_IMAGES)
  rows = max(1, min(out_height, WEIGHT_GRAD_TILE // (out_width * images)))
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
          precision).astype(jnp.promote_types(x.dtype, jnp.float32))
  return total.transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, kernel, padding, groups, precision):
  return _plain_conv(x, kernel, padding, groups, precision)


def _conv_fwd(x, kernel, padding, groups, precision):
  return _plain_conv(x, kernel, padding, groups, precision), (x, kernel)


def _conv_bwd(padding, groups, precision, residuals, grad):
  x, kernel = residuals
  kh, kw, in_per_group, out_channels = kernel.shape
  out_per_group = out_channels // groups
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


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None):
  """`lax.conv_general_dilated` for stride-1, undilated NHWC x HWIO convs.

  lhs [B, H, W, Cin], rhs [kh, kw, Cin / groups, Cout], padding
  ((top, bottom), (left, right)) -> [B, Ho, Wo, Cout]. The signature is
  `nn.Conv`'s `conv_general_dilated`; dimension_numbers is taken as NHWC.
  """
  del dimension_numbers
  for name, value in (('window_strides', window_strides),
                      ('lhs_dilation', lhs_dilation),
                      ('rhs_dilation', rhs_dilation)):
    if value is not None and any(v != 1 for v in value):
      raise ValueError(f'cpu_conv supports {name} of 1 only; got {value}.')
  padding = tuple(tuple(p) for p in padding)
  if (rhs.shape[:2] == (1, 1) and feature_group_count == 1
      and padding == ((0, 0), (0, 0))):
    return jax.lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())),
                               precision=precision)
  return _conv(lhs, rhs, padding, feature_group_count, precision)
