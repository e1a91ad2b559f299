"""Running a trained DCSFN over images of any size, sharded over devices.

Compilation is per input shape. By default every image runs at its native
size, which is what the network computes and what the released eval.py
does. As an opt-in speed mode, images can be padded (reflect, bottom/right)
to a small ladder of shape buckets and the outputs cropped back: far fewer
compilations, but a different result everywhere in the image, since pooling
floors, nearest resizes and the cross-scale GRUs all see the padding. Bucket
sides are multiples of the model's minimum size.

Very large photos are cut into overlapping tiles whose outputs are blended
with weights that ramp linearly across each overlap. Weights are checked to
be finite before they run (`check_finite`): one inf or NaN would turn every
output black.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from dcsfn_jax import parallel
from dcsfn_jax import platforms
from dcsfn_jax.inference import ensemble

# Bucket sides in units of the model's minimum size: every integer up to 4,
# then four steps per octave (<= 25% padding per side).
_LADDER_STEPS_PER_OCTAVE = (1.0, 1.25, 1.5, 1.75)

# Full float32 convolutions: accelerators would otherwise use TF32 or
# bfloat16 passes and move PSNR by hundredths of a dB.
MATMUL_PRECISION = 'highest'


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


def bucket_shape(height, width, granule, bucket=False):
  """(H, W) an image of height x width runs at: its own size, or with
  `bucket` the shape bucket it is padded to."""
  if not bucket:
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
  """A jitted function of (params, batch) run on batches sharded over the
  devices of this process, counting its compilations.

  Each process runs its own calls (evaluation shares are per process), so the
  mesh holds local devices only and nothing here is a collective.

  Attributes:
    compilations: how many times `fn` was traced (one per new input shape).
    batch_size: images per call, a multiple of the device count.
    mesh: the 1-D 'data' mesh the calls run on.
  """

  def __init__(self, fn, *, batch_size=None, split_rows=None, devices=None):
    """Args:
      fn: (params, batch dict of [B, ...] arrays) -> pytree of [B, ...] and
        scalars.
      batch_size: default one image per device; rounded up to a multiple of
        the device count.
      split_rows: whether a lone image is split by rows over the devices.
        Default: on GPU and TPU. On CPU a lone image runs whole on the first
        device: XLA:CPU runs the split's row exchanges (collective-permutes)
        as concurrent tasks on the host's shared thread pool, where they can
        wait on each other for ever; XLA then aborts the process after its
        rendezvous timeout (a 400x600 photo on 2 host devices does).
      devices: the devices to run on (default: this process's); compile-only
        devices of another platform for `lower`.
    """
    self.mesh = parallel.make_mesh(jax.local_devices() if devices is None
                                   else devices)
    devices = self.mesh.devices.size
    self.batch_size = devices * max(1, math.ceil((batch_size or devices)
                                                 / devices))
    if split_rows is None:
      split_rows = platforms.platform_of(self.mesh.devices.flat) != 'cpu'
    self.split_rows = split_rows and devices > 1
    self.compilations = 0

    def counted(params, batch):
      self.compilations += 1  # runs at trace time only
      if not self.split_rows or not _is_lone_image(batch):
        return fn(params, batch)
      # One image: its rows split over the devices, evenly or not (XLA pads
      # the last share inside the computation and exchanges the rows at the
      # seams), so the result is that of the whole image on one device.
      batch = jax.lax.with_sharding_constraint(
          batch, parallel.height_sharded(self.mesh))
      return jax.lax.with_sharding_constraint(
          fn(params, batch), parallel.replicated(self.mesh))

    self._step = jax.jit(counted)

  def place(self, params):
    """`params` held whole on every device of the mesh (a no-op for params
    already placed so); host arrays or any process's replicated jax.Arrays."""
    sharding = parallel.replicated(self.mesh)

    def place_leaf(leaf):
      if isinstance(leaf, jax.Array):
        if leaf.sharding == sharding:
          return leaf
        leaf = leaf.addressable_data(0)
      return jax.device_put(leaf, sharding)

    return jax.tree.map(place_leaf, params)

  def _shardings(self, batch):
    """(params sharding, batch sharding) of a call on `batch`."""
    if _is_lone_image(batch) and not self.split_rows:
      first = jax.sharding.SingleDeviceSharding(self.mesh.devices.flat[0])
      return first, first
    if _is_lone_image(batch):
      # Whole on every device: the step splits its rows (an uneven split
      # cannot be placed from the host).
      return parallel.replicated(self.mesh), parallel.replicated(self.mesh)
    return parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)

  def lower(self, params, batch):
    """The `jax.stages.Lowered` of one call, for compiling ahead of time.

    Args:
      params: shapes and dtypes (jax.ShapeDtypeStruct leaves) of the params.
      batch: shapes and dtypes of a batch as `__call__` runs it: [batch_size,
        ...] leaves, or one image [1, H, ...].
    """
    params_sharding, batch_sharding = self._shardings(batch)

    def placed(tree, sharding):
      return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
          leaf.shape, leaf.dtype, sharding=sharding), tree)

    with jax.default_matmul_precision(MATMUL_PRECISION):
      return self._step.lower(placed(params, params_sharding),
                              placed(batch, batch_sharding))

  def __call__(self, params, batch):
    """Runs `fn` on a host batch of up to `batch_size` examples.

    Args:
      params: from `place` (anything else is placed on every call).
      batch: dict of numpy arrays [n, ...], n <= batch_size; the batch is
        padded with zeros to batch_size and the padding dropped again. A
        single image [1, H, ...] is split along its rows over the devices
        instead (whether or not they divide H) with `split_rows`, else run
        whole on the first device.

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

    params = self.place(params)
    _, batch_sharding = self._shardings(batch)
    if _is_lone_image(batch):
      if not self.split_rows:
        first = self.mesh.devices.flat[0]
        params = jax.tree.map(lambda leaf: _on_device(leaf, first), params)
      placed = jax.device_put({k: np.asarray(v) for k, v in batch.items()},
                              batch_sharding)
    else:
      placed = jax.device_put({k: fill(v) for k, v in batch.items()},
                              batch_sharding)
    with jax.default_matmul_precision(MATMUL_PRECISION):
      outputs = self._step(params, placed)
    # Per-example outputs lose the padding; scalars (e.g. masked sums) stay.
    return jax.tree.map(
        lambda x: np.asarray(x)[:count] if np.ndim(x) else np.asarray(x),
        outputs)


def _on_device(leaf, device):
  """The copy of a replicated jax.Array that lives on `device` (no transfer)."""
  return next(shard.data for shard in leaf.addressable_shards
              if shard.device == device)


def check_finite(params, source):
  """Raises ValueError naming the first parameter of `params` (a nested dict
  of arrays) that holds inf or NaN values; `source` names where the weights
  came from (a checkpoint folder or weights file)."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
      continue
    values = np.asarray(leaf, np.float32)
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
      name = '/'.join(str(getattr(key, 'key', getattr(key, 'idx', key)))
                      for key in path)
      raise ValueError(
          f'{source}: parameter {name} holds inf/NaN values ({bad} of '
          f'{values.size}); these weights would derain every photo to '
          'garbage. Use an earlier checkpoint (--prefer, or a step folder) '
          'or a good copy of the weights file.')


def _is_lone_image(batch):
  """True for a batch of one image ([1, H, ...] leaves, H the rows)."""
  return all(np.ndim(v) >= 3 and np.shape(v)[0] == 1 for v in batch.values())


def forward_fn(model_config, self_ensemble=False, devices=None):
  """(params, {'rainy': [B, H, W, 3]}) -> {'derained': [B, H, W, 3]}; with
  `self_ensemble` the mean over the 8 flips and rotations (`ensemble`).

  The model is resolved for the platform of `devices` (default: this
  process's, which `Runner` runs on by default).
  """
  model = platforms.model_for(
      model_config, jax.local_devices() if devices is None else devices)

  def forward(params, batch):
    derain = lambda images: model.apply({'params': params}, images)
    if self_ensemble:
      derain = ensemble.self_ensemble(derain)
    return {'derained': derain(batch['rainy'])}

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


def derain_tiled(runner, params, rainy, tile, overlap, granule):
  """Derains [H, W, 3] (H, W multiples of granule) in overlapping
  tile x tile pieces with `runner` (of `forward_fn`) and placed `params`,
  batched over devices; returns float32 [H, W, 3].

  rainy: float in [0, 1], or uint8, which is converted tile by tile (no
  float copy of the whole photo). Host memory beyond `rainy` is one float32
  image: the blend weights are separable, so their sums are 1-D.
  """
  height, width = rainy.shape[:2]
  tile_h, tile_w = min(tile, height), min(tile, width)
  tops = tile_origins(height, tile_h, overlap, granule)
  lefts = tile_origins(width, tile_w, overlap, granule)
  boxes = [(top, left) for top in tops for left in lefts]
  window_h, window_w = blend_window(tile_h, overlap), blend_window(tile_w,
                                                                  overlap)
  weights = window_h[:, None, None] * window_w[None, :, None]
  # Every row of tiles spans every column: the weight sum is an outer
  # product of per-axis sums.
  sum_h, sum_w = np.zeros(height, np.float64), np.zeros(width, np.float64)
  for top in tops:
    sum_h[top:top + tile_h] += window_h
  for left in lefts:
    sum_w[left:left + tile_w] += window_w
  total = np.zeros((height, width, 3), np.float32)
  for start in range(0, len(boxes), runner.batch_size):
    chunk = boxes[start:start + runner.batch_size]
    tiles = np.stack([rainy[top:top + tile_h, left:left + tile_w]
                      for top, left in chunk])
    if tiles.dtype == np.uint8:
      tiles = tiles.astype(np.float32) / 255.0
    outputs = runner(params, {'rainy': tiles})['derained']
    for (top, left), output in zip(chunk, outputs):
      total[top:top + tile_h, left:left + tile_w] += weights * output
  total /= sum_h.astype(np.float32)[:, None, None]
  total /= sum_w.astype(np.float32)[None, :, None]
  return total
