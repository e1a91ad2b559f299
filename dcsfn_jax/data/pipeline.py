"""grain input pipeline: training examples, augmented on the device.

Training stream. Epoch e visits the examples in the permutation drawn from
(seed, e), dropping the last N mod G examples (G = global batch size). Global
batch b of epoch e holds permutation positions [b*G, (b+1)*G); host p of P
takes the contiguous slice [p*G/P, (p+1)*G/P) of it, so the hosts' parts are
disjoint and together make the global batch. The augmentation of an example
draws only from (seed, e, example index), so a stream depends on nothing but
its arguments, and grain's iterator state (the next position, JSON-able)
resumes it exactly.

Released augmentation (REFERENCE §3), drawn here and applied on the device
(`data.augment.released_patches`, called by the train step) to rainy and
clean stacked as one 6-channel array, so both get the same geometry:
  1. crop height and width drawn independently from P + [-P/4, P/4]
     (48..80 for P=64), at a uniform position;
  2. bilinear resize to P x P (half-pixel centres, as cv2.resize);
  3. horizontal flip with probability 1/2;
  4. rotation by an integer angle in [-30, 30] degrees about the patch centre,
     bilinear, zero (black) outside the patch.
The host cuts a fixed window around the crop (`augment.window_size`, 84 px
at P=64; image edges replicated) and sends it as uint8 with the draw; the
device composes the four steps into one affine map and samples it once.
Unlike the released loader, every range is inclusive and the centre is the
true centre, (P-1)/2; the released code's repeated RandomState is not
reproduced. 'crop' mode takes a plain P x P crop on the host.
"""
import dataclasses
import functools
import sys
import threading
from typing import Literal

import grain
import numpy as np

from dcsfn_jax.data import augment as augment_lib
from dcsfn_jax.metrics import to_float

_SHUFFLE_STREAM = 0
_AUGMENT_STREAM = 1
MAX_ROTATION_DEGREES = 30


def _example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  return np.random.default_rng(
      np.random.SeedSequence(seed, spawn_key=(_AUGMENT_STREAM, epoch, index)))


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  rng = np.random.default_rng(
      np.random.SeedSequence(seed, spawn_key=(_SHUFFLE_STREAM, epoch)))
  return rng.permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class ReleasedDraw:
  """One example's draw of the released augmentation (pixels, degrees)."""
  top: int
  left: int
  crop_height: int
  crop_width: int
  flip: bool
  degrees: int


def draw_released(rng: np.random.Generator, height: int, width: int,
                  patch_size: int) -> ReleasedDraw:
  """Crop size P + U{-P/4..P/4} per axis (at most the image), position,
  flip with p=1/2 and an integer angle in [-30, 30]."""
  jitter = patch_size // 4
  crop_height = min(height, patch_size + int(rng.integers(-jitter, jitter + 1)))
  crop_width = min(width, patch_size + int(rng.integers(-jitter, jitter + 1)))
  return ReleasedDraw(
      top=int(rng.integers(0, height - crop_height + 1)),
      left=int(rng.integers(0, width - crop_width + 1)),
      crop_height=crop_height, crop_width=crop_width,
      flip=bool(rng.random() < 0.5),
      degrees=int(rng.integers(-MAX_ROTATION_DEGREES,
                               MAX_ROTATION_DEGREES + 1)))


def cut_window(image: np.ndarray, top: int, left: int,
               size: int) -> np.ndarray:
  """image[top:top+size, left:left+size] of [h, w, c], rows and columns
  outside the image replaced by the nearest edge (a copy, same dtype)."""
  height, width = image.shape[:2]
  rows = np.clip(np.arange(top, top + size), 0, height - 1)
  cols = np.clip(np.arange(left, left + size), 0, width - 1)
  return image[rows[:, None], cols[None, :]]


def _resolve_process(process_index: int | None,
                     process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in '
                     f'[0, process_count={process_count}).')
  return process_index, process_count


def _host_share(global_batch_size: int, process_index: int | None,
                process_count: int | None) -> tuple[int, int, int]:
  process_index, process_count = _resolve_process(process_index, process_count)
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size={global_batch_size} is not divisible by '
        f'process_count={process_count}; choose a multiple of {process_count}.')
  return process_index, process_count, global_batch_size // process_count


class _TrainPatches:
  """Infinite random-access stream of this host's augmented examples."""

  def __init__(self, source, *, global_batch_size: int, patch_size: int,
               augment: str, seed: int, process_index: int, local_batch: int,
               cache_bytes: int):
    self._source = source
    self._cache = {}
    self._cache_room = cache_bytes
    self._cache_lock = threading.Lock()
    self._global = global_batch_size
    self._local = local_batch
    self._offset = process_index * local_batch
    self._steps_per_epoch = len(source) // global_batch_size
    self._patch_size = patch_size
    self._augment = augment
    self._seed = seed

  @functools.lru_cache(maxsize=4)
  def _permutation(self, epoch: int) -> np.ndarray:
    return epoch_permutation(self._seed, epoch, len(self._source))

  def example_index(self, position: int) -> tuple[int, int]:
    """(epoch, source index) of this host's `position`-th example."""
    step, slot = divmod(position, self._local)
    epoch, step_in_epoch = divmod(step, self._steps_per_epoch)
    within_epoch = step_in_epoch * self._global + self._offset + slot
    return epoch, int(self._permutation(epoch)[within_epoch])

  def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(rainy, clean, name) of an example, kept decoded while the cache has
    room: decoding a photo costs more than augmenting it."""
    cached = self._cache.get(index)
    if cached is not None:
      return cached
    example = self._source[index]
    decoded = (example['rainy'], example['clean'], example['name'])
    with self._cache_lock:
      size = decoded[0].nbytes + decoded[1].nbytes
      if size <= self._cache_room:
        self._cache[index] = decoded
        self._cache_room -= size
    return decoded

  def __call__(self, position: int) -> dict:
    epoch, index = self.example_index(position)
    rainy, clean, name = self._decoded(index)
    height, width = rainy.shape[:2]
    rng = _example_rng(self._seed, epoch, index)
    size = self._patch_size
    if self._augment == 'released':
      draw = draw_released(rng, height, width, size)
      window = np.concatenate(
          [cut_window(image, draw.top - augment_lib.WINDOW_MARGIN,
                      draw.left - augment_lib.WINDOW_MARGIN,
                      augment_lib.window_size(size)) for image in (rainy, clean)],
          axis=-1)
      return {'window': window,
              'crop_size': np.asarray([draw.crop_height, draw.crop_width],
                                      np.int32),
              'flip': np.bool_(draw.flip),
              'degrees': np.int32(draw.degrees)}
    if min(height, width) < size:
      raise ValueError(
          f'Example {name!r} is {height}x{width}, smaller than '
          f'patch_size={size}; lower patch_size or use '
          "augment='released', which crops no more than the image.")
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    # Cut before converting: the float copy of a whole photo costs more than
    # the crop itself.
    window = (slice(top, top + size), slice(left, left + size))
    patch = to_float(np.concatenate([rainy[window], clean[window]], axis=-1))
    return {'rainy': np.ascontiguousarray(patch[..., :3], np.float32),
            'clean': np.ascontiguousarray(patch[..., 3:], np.float32)}


def train_iterator(source, *, global_batch_size: int, patch_size: int = 64,
                   augment: Literal['released', 'crop'] = 'released',
                   seed: int, process_index: int | None = None,
                   process_count: int | None = None, num_threads: int = 4,
                   prefetch_batches: int = 4, cache_mib: int = 1024):
  """Endless iterator of this host's share of each global batch.

  With B = global_batch_size / process_count, yields for augment='crop'
  {'rainy', 'clean'}: float32 [B, patch_size, patch_size, 3] in [0, 1]; for
  augment='released' the host windows and draws that the train step augments
  on the device (`data.augment.released_patches`): {'window': uint8 [B, W,
  W, 6] (rainy | clean, W = augment.window_size(patch_size)), 'crop_size':
  int32 [B, 2] (height, width), 'flip': bool [B], 'degrees': int32 [B]}.
  `get_state()` / `set_state(state)` save and restore the position (a
  JSON-able dict). Hosts default to
  jax.process_index() / jax.process_count(). Up to `cache_mib` MiB of decoded
  examples stay in memory (first come, never evicted); the stream does not
  depend on it.
  """
  if augment not in ('released', 'crop'):
    raise ValueError(f"augment={augment!r}; choose 'released' or 'crop'.")
  process_index, _, local_batch = _host_share(
      global_batch_size, process_index, process_count)
  if len(source) < global_batch_size:
    raise ValueError(
        f'The training split has {len(source)} examples, fewer than '
        f'global_batch_size={global_batch_size}; lower the batch size.')
  if 'clean' not in source[0]:
    raise ValueError(
        f'{getattr(source, "dataset", "The training source")} has no clean '
        'images (unpaired real rain); train on a paired dataset.')
  patches = _TrainPatches(
      source, global_batch_size=global_batch_size, patch_size=patch_size,
      augment=augment, seed=seed, process_index=process_index,
      local_batch=local_batch, cache_bytes=cache_mib * 2**20)
  dataset = (grain.MapDataset.range(sys.maxsize)
             .map(patches)
             .batch(local_batch, drop_remainder=True))
  # Each reader thread makes whole batches, prefetch_batches of them ahead.
  read_options = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=prefetch_batches)
  return iter(dataset.to_iter_dataset(read_options))
