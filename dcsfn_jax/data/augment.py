"""The released augmentation's geometry, on the device (dm-pix).

The host (`data.pipeline`) draws each example's crop size, flip and angle
from (seed, epoch, index) and cuts a fixed window around the crop (uint8,
rainy and clean stacked as 6 channels, so both get the same geometry).
`released_patches` turns a batch of windows into [B, P, P, 3] float32
patches inside the jitted train step, on the batch's sharding.

Output pixel (i, j) of the P x P patch (rows, columns; c = (P - 1) / 2) reads
the window at one point, the composition of the released steps:
  rotation   by `degrees` counter-clockwise as displayed, about the centre:
               uy =  cos t (i - c) + sin t (j - c) + c
               ux = -sin t (i - c) + cos t (j - c) + c
  flip       ux -> P - 1 - ux when `flip`
  resize     half-pixel centres (cv2.resize): y = (uy + 1/2) h / P - 1/2,
             x = (ux + 1/2) w / P - 1/2, for a crop of h x w pixels
  crop       the crop starts at (WINDOW_MARGIN, WINDOW_MARGIN) in the window
One affine map, sampled once, bilinear (`dm_pix.affine_transform`, order 1,
mode 'constant', 0 outside the window). Outside the patch is black, as after
the released rotation: the sample is multiplied by the patch's coverage at
(uy, ux), the bilinear weight of the P x P grid there (1 inside, a one-pixel
ramp at the edge, 0 beyond), which is the weight a bilinear rotation of the
patch gives to samples inside it. The released code (cv2) samples twice, a
bilinear resize of the cut-out crop and then a bilinear rotation, and so
clamps the resize's taps to the crop at its edge; the one sample here reads
the pixels next to the crop instead and blurs once, not twice.

Window size: a sample has non-zero coverage only for uy, ux in (-1, P), i.e.
at crop coordinates in (-s/2 - 1/2, h - 1/2 + s/2) with s = h / P <= 5/4
(crops are at most P + P // 4), so its two bilinear taps lie in [-2, h]:
a margin of 2 before the crop and 1 after it. The window is therefore
P + P // 4 + 2 * WINDOW_MARGIN per side (84 at P = 64); rotation reaches no
further, since everything it would bring in from outside the patch is black.
"""
import functools

import dm_pix
import jax
import jax.numpy as jnp

from dcsfn_jax.metrics import to_float

# Pixels of image context cut around the crop on each side.
WINDOW_MARGIN = 2
# The keys of a batch of host windows (data.pipeline, augment='released').
WINDOW_KEYS = ('window', 'crop_size', 'flip', 'degrees')


def max_crop(patch_size: int) -> int:
  """The largest crop side the released draw makes: P + P // 4 (px)."""
  return patch_size + patch_size // 4


def window_size(patch_size: int) -> int:
  """Side of the host window (px): the largest crop plus the margins."""
  return max_crop(patch_size) + 2 * WINDOW_MARGIN


def is_window_batch(batch) -> bool:
  """Whether `batch` holds host windows (else ready {'rainy', 'clean'})."""
  return 'window' in batch


def _coverage(position, patch_size):
  """Bilinear weight of the grid 0..P-1 at `position` (px): 1 inside, a
  one-pixel linear ramp at each edge, 0 beyond."""
  return jnp.clip(jnp.minimum(position + 1.0, patch_size - position), 0.0, 1.0)


def _rotation(degrees):
  theta = jnp.deg2rad(degrees.astype(jnp.float32))
  return jnp.cos(theta), jnp.sin(theta)


def affine_matrix(crop_size, flip, degrees, patch_size: int):
  """The [3, 4] map from (row, col, channel, 1) of the patch to the window.

  Args:
    crop_size: int [2], the crop's height and width (px).
    flip: bool [], horizontal flip.
    degrees: int [], counter-clockwise rotation.
    patch_size: P, the output side (px).
  """
  size = jnp.float32(patch_size)
  centre = (size - 1.0) / 2.0
  cos, sin = _rotation(degrees)
  rotation = jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])])
  rotation_offset = centre - rotation @ jnp.stack([centre, centre])
  # The flip acts on the column: x -> P - 1 - x.
  mirror = jnp.stack([jnp.float32(1.0), jnp.where(flip, -1.0, 1.0)])
  mirror_offset = jnp.stack([jnp.float32(0.0),
                             jnp.where(flip, size - 1.0, 0.0)])
  scale = crop_size.astype(jnp.float32) / size
  linear = (scale * mirror)[:, None] * rotation
  offset = (scale * (mirror * rotation_offset + mirror_offset + 0.5) - 0.5
            + WINDOW_MARGIN)
  zero, one = jnp.float32(0.0), jnp.float32(1.0)
  return jnp.stack([
      jnp.stack([linear[0, 0], linear[0, 1], zero, offset[0]]),
      jnp.stack([linear[1, 0], linear[1, 1], zero, offset[1]]),
      jnp.stack([zero, zero, one, zero])])


def _one_patch(window, crop_size, flip, degrees, patch_size):
  """float32 [W, W, C] window -> [P, P, C] patch."""
  matrix = affine_matrix(crop_size, flip, degrees, patch_size)
  # dm_pix.affine_transform's coordinates, (row, col, channel, 1) @ matrix.T,
  # for the patch only, as multiply-adds: as a HIGHEST-precision dot with
  # three terms, XLA:GPU's Triton GEMM finds no tiling and the step does not
  # compile for A100/H100 (python -m dcsfn_jax.aot).
  grid = jnp.meshgrid(jnp.arange(patch_size), jnp.arange(patch_size),
                      jnp.arange(window.shape[-1]), indexing='ij')
  coordinates = jnp.stack([
      grid[0] * matrix[axis, 0] + grid[1] * matrix[axis, 1]
      + grid[2] * matrix[axis, 2] + matrix[axis, 3] for axis in range(3)])
  sampled = dm_pix.flat_nd_linear_interpolate_constant(window, coordinates,
                                                       cval=0.0)
  centre = (patch_size - 1) / 2
  rows, cols = jnp.meshgrid(jnp.arange(patch_size, dtype=jnp.float32) - centre,
                            jnp.arange(patch_size, dtype=jnp.float32) - centre,
                            indexing='ij')
  cos, sin = _rotation(degrees)
  coverage = (_coverage(cos * rows + sin * cols + centre, patch_size)
              * _coverage(-sin * rows + cos * cols + centre, patch_size))
  return sampled * coverage[..., None]


@functools.partial(jax.jit, static_argnames='patch_size')
def released_patches(batch, patch_size: int):
  """Host windows -> the released augmentation's patches, one sample each.

  Args:
    batch: {'window': uint8 [B, W, W, 6] (rainy | clean), 'crop_size': int
      [B, 2] (height, width, px), 'flip': bool [B], 'degrees': int [B]}, W =
      `window_size(patch_size)`.
    patch_size: P.

  Returns:
    {'rainy', 'clean'}: float32 [B, P, P, 3] in [0, 1].
  """
  windows = to_float(batch['window'])
  # dm-pix maps coordinates with a matmul; at default precision GPUs (TF32)
  # and TPUs (bfloat16 passes) would move samples by a fraction of a pixel.
  with jax.default_matmul_precision('highest'):
    patches = jax.vmap(functools.partial(_one_patch, patch_size=patch_size))(
        windows, batch['crop_size'], batch['flip'], batch['degrees'])
  return {'rainy': patches[..., :3], 'clean': patches[..., 3:]}
