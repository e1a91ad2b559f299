"""Running a trained DCSFN over images of any size, sharded over devices.

Compilation is per input shape, so images are padded (reflect, bottom/right)
to a small ladder of shape buckets and the outputs cropped back; `exact=True`
runs every image at its native size instead (one compilation per size), which
is what the released eval.py does. Bucket sides are multiples of the model's
minimum size, so pooling grids stay aligned with the image's top-left corner.

Very large photos are cut into overlapping tiles whose outputs are blended
with weights that ramp linearly across each overlap.
"""
import math

import jax
import numpy as np

from dcsfn_jax import models
from dcsfn_jax import parallel

# Bucket sides in units of the model's minimum size: every integer up to 4,
# then four steps per octave (<= 25% padding per side).
_LADDER_STEPS_PER_OCTAVE = (1.0, 1.25, 1.5, 1.75)


def bucket_side(size, granule):
  """Smallest bucket side >= size: granule times 1, 2, 3, 4, 5, 6, 7, 8, 10,
  12, 14, 16, 20, ..."""
  units = math.ceil(size / granule)
  if units <= 4:
    return units * granule
  octave = 2 ** (units.bit_length() - 1)
  for step in _LADDER_STEPS_PER_OCTAVE + (2.0,):
    if units <= octave * step:
      return int(octave * step) * granule
  raise AssertionError('unreachable: the ladder covers every octave')


def bucket_shape(height, width, granule, exact=False):
  """(H, W) an image of height x width is padded to before inference."""
  if exact:
    return height, width
  return bucket_side(height, granule), bucket_side(width, granule)


def pad_image(image, height, width):
  """Pads [h, w, C] at the bottom/right to [height, width, C] by reflection
  (repeated for pads longer than the image)."""
  pads = ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0))
  if pads[0][1] < 0 or pads[1][1] < 0:
    raise ValueError(f'Cannot pad {image.shape[:2]} down to '
                     f'{(height, width)}.')
  if image.shape[0] == 1 or image.shape[1] == 1:
    return np.pad(image, pads, mode='edge')
  return np.pad(image, pads, mode='reflect')


class Runner:
  """A jitted function of (params, batch) run on batches sharded over every
  device, counting its compilations.

  Attributes:
    compilations: how many times `fn` was traced (one per new input shape).
    batch_size: images per call, a multiple of the device count.
  """

  def __init__(self, fn, params, *, batch_size=None, mesh=None):
    """Args:
      fn: (params, batch dict of [B, ...] arrays) -> pytree of [B, ...].
      params: parameter pytree, replicated onto the mesh.
      batch_size: default one image per device; rounded up to a multiple of
        the device count.
      mesh: default `parallel.make_mesh()`.
    """
    if jax.process_count() > 1:
      raise NotImplementedError(
          'Evaluation and derain run in a single process; launch them '
          'without jax.distributed (all local devices are still used).')
    self.mesh = parallel.make_mesh() if mesh is None else mesh
    devices = self.mesh.devices.size
    self.batch_size = devices * max(1, math.ceil((batch_size or devices)
                                                 / devices))
    self.compilations = 0
    self._params = parallel.replicate(params, self.mesh)

    def counted(params, batch):
      self.compilations += 1  # runs at trace time only
      return fn(params, batch)

    self._step = jax.jit(counted)

  def __call__(self, batch):
    """Runs `fn` on a host batch of up to `batch_size` examples.

    Args:
      batch: dict of numpy arrays [n, ...], n <= batch_size; the batch is
        padded with zeros to batch_size and the padding dropped again. A
        single image [1, H, ...] whose H the device count divides (any
        bucket shape) is split along its rows instead.

    Returns:
      fn's outputs as numpy arrays, [n, ...] for per-example ones.
    """
    count = len(next(iter(batch.values())))
    if count > self.batch_size:
      raise ValueError(f'{count} examples exceed batch_size '
                       f'{self.batch_size}.')

    def fill(array):
      array = np.asarray(array)
      padding = np.zeros((self.batch_size - count,) + array.shape[1:],
                         array.dtype)
      return np.concatenate([array, padding])

    devices = self.mesh.devices.size
    if count == 1 and devices > 1 and all(
        np.ndim(v) >= 3 and np.shape(v)[1] % devices == 0
        for v in batch.values()):
      # One image: split its rows over the devices rather than padding the
      # batch with blank images that would keep all but one device busy
      # for nothing (same result, bit for bit).
      placed = jax.device_put({k: np.asarray(v) for k, v in batch.items()},
                              parallel.height_sharded(self.mesh))
    else:
      placed = parallel.shard_batch({k: fill(v) for k, v in batch.items()},
                                    self.mesh)
    # Full float32 convolutions: accelerators would otherwise use TF32 or
    # bfloat16 passes and move PSNR by hundredths of a dB.
    with jax.default_matmul_precision('highest'):
      outputs = self._step(self._params, placed)
    # Per-example outputs lose the padding; scalars (e.g. masked sums) stay.
    return jax.tree.map(
        lambda x: np.asarray(x)[:count] if np.ndim(x) else np.asarray(x),
        outputs)


def forward_fn(model_config):
  """(params, {'rainy': [B, H, W, 3]}) -> {'derained': [B, H, W, 3]}."""
  model = models.build_model(model_config)

  def forward(params, batch):
    return {'derained': model.apply({'params': params}, batch['rainy'])}

  return forward


def tile_origins(length, tile, overlap, granule):
  """Start offsets of tiles of side `tile` covering [0, length).

  Consecutive tiles overlap by at least `overlap`; starts are multiples of
  `granule` (length and tile must be too) and the last tile ends at length.
  """
  if length <= tile:
    return [0]
  stride = max(granule, (tile - overlap) // granule * granule)
  origins = list(range(0, length - tile, stride))
  origins.append(length - tile)
  return origins


def blend_window(tile, overlap):
  """1-D blend weights [tile]: ramps up over the first `overlap` samples,
  down over the last, positive everywhere."""
  positions = np.arange(tile) + 0.5
  ramp = np.minimum(positions, tile - positions) / max(overlap, 1)
  return np.minimum(1.0, ramp).astype(np.float32)


def derain_tiled(runner, rainy, tile, overlap, granule):
  """Derains float [H, W, 3] (H, W multiples of granule) in overlapping
  tile x tile pieces, batched over devices; returns float32 [H, W, 3]."""
  height, width = rainy.shape[:2]
  tile_h, tile_w = min(tile, height), min(tile, width)
  boxes = [(top, left) for top in tile_origins(height, tile_h, overlap,
                                               granule)
           for left in tile_origins(width, tile_w, overlap, granule)]
  weights = (blend_window(tile_h, overlap)[:, None, None]
             * blend_window(tile_w, overlap)[None, :, None])
  total = np.zeros((height, width, 3), np.float64)
  weight_sum = np.zeros((height, width, 1), np.float64)
  for start in range(0, len(boxes), runner.batch_size):
    chunk = boxes[start:start + runner.batch_size]
    tiles = np.stack([rainy[top:top + tile_h, left:left + tile_w]
                      for top, left in chunk])
    outputs = runner({'rainy': tiles})['derained']
    for (top, left), output in zip(chunk, outputs):
      total[top:top + tile_h, left:left + tile_w] += weights * output
      weight_sum[top:top + tile_h, left:left + tile_w] += weights
  return (total / weight_sum).astype(np.float32)
