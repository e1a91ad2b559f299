"""The released augmentation on the device (data.augment, dm-pix) against an
independent float64 reference; markers for flip and rotation; rainy and clean
share the geometry; the pipeline's windows become patches in the train step,
on the batch's sharding."""
import re

import jax
import numpy as np
import optax
import pytest

from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import platforms
from dcsfn_jax.data import augment
from dcsfn_jax.data import load_split
from dcsfn_jax.data import pipeline
from dcsfn_jax.training import config as train_config
from dcsfn_jax.training import schedules
from dcsfn_jax.training import state as state_lib

P = 64
W = augment.window_size(P)
M = augment.WINDOW_MARGIN


def _bilinear(image, rows, cols):
  """float64 bilinear samples of [h, w, c] at float arrays rows, cols; taps
  outside the image count as 0."""
  height, width = image.shape[:2]
  top, left = np.floor(rows).astype(int), np.floor(cols).astype(int)
  out = 0.0
  for dy in (0, 1):
    for dx in (0, 1):
      y, x = top + dy, left + dx
      weight = (1 - np.abs(rows - y)) * (1 - np.abs(cols - x))
      inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
      taps = image[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)]
      out = out + np.where(inside, weight, 0.0)[..., None] * taps
  return out


def reference_patch(window, crop_size, flip, degrees, patch_size=P):
  """float64 [W, W, C] window -> [P, P, C], written from the released steps.

  For each output pixel: undo the rotation (counter-clockwise on screen, so
  in x-right/y-up coordinates the pixel comes from the point rotated by
  -degrees), undo the flip, map the P x P patch onto the crop (half-pixel
  centres), shift by the crop's place in the window, sample once. Black
  outside the patch: the sample times the bilinear weight of an all-ones
  P x P patch at the unrotated point.
  """
  window = np.asarray(window, np.float64)
  height, width = crop_size
  centre = (patch_size - 1) / 2
  out_row, out_col = np.meshgrid(np.arange(patch_size, dtype=np.float64),
                                 np.arange(patch_size, dtype=np.float64),
                                 indexing='ij')
  x, y = out_col - centre, centre - out_row  # y points up
  theta = np.deg2rad(float(degrees))
  src_x = np.cos(theta) * x + np.sin(theta) * y
  src_y = -np.sin(theta) * x + np.cos(theta) * y
  row, col = centre - src_y, centre + src_x  # in the (flipped) patch
  inside = _bilinear(np.ones((patch_size, patch_size, 1)), row, col)
  if flip:
    col = patch_size - 1 - col
  crop_row = (row + 0.5) * height / patch_size - 0.5
  crop_col = (col + 0.5) * width / patch_size - 0.5
  return _bilinear(window, crop_row + M, crop_col + M) * inside


def _batch(windows, draws):
  """A window batch from uint8 [B, W, W, C] and (height, width, flip, deg)."""
  return {'window': np.asarray(windows, np.uint8),
          'crop_size': np.asarray([d[:2] for d in draws], np.int32),
          'flip': np.asarray([d[2] for d in draws], bool),
          'degrees': np.asarray([d[3] for d in draws], np.int32)}


def _patches(batch, patch_size=P):
  out = jax.device_get(augment.released_patches(batch, patch_size))
  return np.concatenate([out['rainy'], out['clean']], axis=-1)


# Extremes of the draw (48 and 80 px, +-30 degrees), unequal sides, flips.
_DRAWS = [(48, 48, False, -30), (80, 80, True, 30), (80, 48, False, 17),
          (48, 80, True, -11), (64, 64, False, 0), (57, 71, True, 0),
          (64, 64, True, 90), (75, 52, False, 29)]


@pytest.mark.accelerator
def test_patches_equal_the_float64_reference():
  rng = np.random.default_rng(0)
  windows = rng.integers(0, 256, (len(_DRAWS), W, W, 6), dtype=np.uint8)
  got = _patches(_batch(windows, _DRAWS))
  assert got.shape == (len(_DRAWS), P, P, 6) and got.dtype == np.float32
  for index, draw in enumerate(_DRAWS):
    want = reference_patch(windows[index] / 255.0, draw[:2], draw[2], draw[3])
    np.testing.assert_allclose(got[index], want, atol=2e-5, rtol=0,
                               err_msg=f'draw {draw}')


@pytest.mark.accelerator
def test_window_covers_every_sample_and_outside_the_patch_is_black():
  # An all-ones window gives exactly the patch's coverage wherever every
  # sample lies inside the window: 1 inside the rotated patch, 0 outside.
  draws = [(h, w, flip, degrees) for h in (48, 80) for w in (48, 80)
           for flip in (False, True) for degrees in (-30, -7, 0, 30)]
  got = _patches(_batch(np.full((len(draws), W, W, 6), 255), draws))
  for index, draw in enumerate(draws):
    want = reference_patch(np.ones((W, W, 6)), draw[:2], draw[2], draw[3])
    np.testing.assert_allclose(got[index], want, atol=2e-5, rtol=0,
                               err_msg=f'draw {draw}')
    if draw[3] == 0:  # no dark frame, upsampled or not
      np.testing.assert_allclose(got[index], 1.0, atol=1e-6)
    else:
      assert got[index, 0, 0].max() == got[index, -1, -1].max() == 0
      assert got[index, P // 2, P // 2].min() == pytest.approx(1.0)


def _marker(row, col, channels=6):
  """A window that is 0 but for one 255 pixel at (row, col) of the crop."""
  window = np.zeros((1, W, W, channels), np.uint8)
  window[0, M + row, M + col] = 255
  return window


def _forward(row, col, degrees, flip=False, patch_size=P):
  """Where the released steps move pixel (row, col) of a P x P crop: flip,
  then a counter-clockwise turn on screen about the centre."""
  centre = (patch_size - 1) / 2
  if flip:
    col = patch_size - 1 - col
  theta = np.deg2rad(degrees)
  dy, dx = row - centre, col - centre
  return (centre + np.cos(theta) * dy - np.sin(theta) * dx,
          centre + np.sin(theta) * dy + np.cos(theta) * dx)


@pytest.mark.accelerator
def test_flip_mirrors_a_marker_exactly():
  got = _patches(_batch(_marker(10, 3), [(P, P, True, 0)]))[0, ..., 0]
  want = np.zeros((P, P))
  want[10, P - 1 - 3] = 1.0
  np.testing.assert_array_equal(got, want)


@pytest.mark.accelerator
@pytest.mark.parametrize('degrees, flip', [(90, False), (30, False),
                                           (-30, False), (30, True)])
def test_rotation_turns_a_marker_counter_clockwise(degrees, flip):
  row, col = 31, 56  # right of the centre (31.5, 31.5)
  got = _patches(_batch(_marker(row, col), [(P, P, flip, degrees)]))[0, ..., 0]
  want_row, want_col = _forward(row, col, degrees, flip)
  peak = np.unravel_index(np.argmax(got), got.shape)
  assert abs(peak[0] - want_row) <= 0.71 and abs(peak[1] - want_col) <= 0.71
  rows, cols = np.indices(got.shape)
  centre_of_mass = (np.sum(rows * got) / got.sum(),
                    np.sum(cols * got) / got.sum())
  np.testing.assert_allclose(centre_of_mass, (want_row, want_col), atol=0.25)
  if degrees == 30 and not flip:
    assert want_row < row and want_col < col, 'right of centre turns upwards'


@pytest.mark.accelerator
def test_a_quarter_turn_is_rot90():
  crop = np.random.default_rng(1).integers(0, 256, (P, P, 6), np.uint8)
  window = np.zeros((1, W, W, 6), np.uint8)
  window[0, M:M + P, M:M + P] = crop
  got = _patches(_batch(window, [(P, P, False, 90)]))[0]
  np.testing.assert_allclose(got, np.rot90(crop / 255.0, k=1), atol=1e-4)


def test_rainy_and_clean_get_the_same_geometry():
  rng = np.random.default_rng(2)
  clean = rng.integers(0, 128, (len(_DRAWS), W, W, 3), dtype=np.uint8)
  got = _patches(_batch(np.concatenate([2 * clean, clean], -1), _DRAWS))
  np.testing.assert_allclose(got[..., :3], 2 * got[..., 3:], atol=1e-6)
  assert np.abs(got[..., 3:]).max() > 0.2


def test_coordinates_are_mapped_at_highest_precision():
  # dm-pix maps coordinates with a matmul; TF32 (GPU) or bfloat16 passes
  # (TPU) would shift samples by a fraction of a pixel.
  batch = _batch(np.zeros((2, W, W, 6)), _DRAWS[:2])
  text = augment.released_patches.lower(batch, P).as_text()
  precisions = set(re.findall(r'precision = \[([A-Z]+), ([A-Z]+)\]', text))
  assert precisions == {('HIGHEST', 'HIGHEST')}


def test_sharded_batch_stays_sharded_and_equals_one_device():
  devices = jax.devices('cpu')
  assert len(devices) >= 4, 'conftest should simulate 4 CPU devices'
  rng = np.random.default_rng(3)
  batch = _batch(rng.integers(0, 256, (len(_DRAWS), W, W, 6)), _DRAWS)
  mesh = parallel.make_mesh(devices[:4])
  sharded = parallel.shard_batch(batch, mesh)
  augment_fn = jax.jit(lambda b: augment.released_patches(b, P))
  compiled = augment_fn.lower(sharded).compile()
  hlo = compiled.as_text()
  assert not re.search(r'all-gather|all-to-all|all-reduce|collective-permute',
                       hlo), 'the augmentation moved data between devices'
  out = compiled(sharded)
  assert out['rainy'].sharding.is_equivalent_to(parallel.batch_sharded(mesh),
                                                4)
  one = augment_fn(jax.device_put(batch, devices[0]))
  np.testing.assert_allclose(np.asarray(out['rainy']), np.asarray(one['rainy']),
                             atol=1e-6)


def test_pipeline_windows_become_distinct_patches(synthetic_data_dir):
  source = load_split('synthetic_rain', 'train', synthetic_data_dir)
  batch = next(pipeline.train_iterator(source, global_batch_size=4, seed=3,
                                       process_index=0, process_count=1))
  assert batch['window'].shape == (4, W, W, 6)
  assert batch['window'].dtype == np.uint8
  patches = _patches(batch)
  assert patches.shape == (4, P, P, 6)
  assert len({p.tobytes() for p in patches}) == 4
  for index in range(4):
    want = reference_patch(batch['window'][index] / 255.0,
                           batch['crop_size'][index], batch['flip'][index],
                           batch['degrees'][index])
    np.testing.assert_allclose(patches[index], want, atol=2e-5, rtol=0)


def test_train_step_augments_window_batches_on_the_device():
  config = train_config.base_config()
  config.model.update(channels=4, num_blocks=1, num_scales=1,
                      convs_per_scale=1)
  config.patch_size = 32
  model = platforms.model_for(config.model, jax.devices())
  optimizer = optax.adam(1e-3)
  schedule = schedules.multistep_lr(1e-3, (100,))
  mesh = parallel.make_mesh(jax.devices()[:1])
  host_state = jax.device_get(state_lib.create_train_state(
      model, optimizer, config.patch_size, jax.random.key(0)))
  step = state_lib.make_train_step(model, optimizer, schedule, config, mesh)
  size = augment.window_size(config.patch_size)
  rng = np.random.default_rng(4)
  windows = rng.integers(0, 256, (4, size, size, 6), dtype=np.uint8)
  batch = _batch(windows, [(24, 40, True, 13), (40, 40, False, -30),
                           (32, 24, True, 0), (33, 35, False, 7)])
  _, from_windows = step(parallel.replicate(host_state, mesh),
                         parallel.shard_batch(batch, mesh))
  patches = jax.device_get(augment.released_patches(batch, config.patch_size))
  _, from_patches = step(parallel.replicate(host_state, mesh),
                         parallel.shard_batch(patches, mesh))
  assert float(from_windows['loss']) == pytest.approx(
      float(from_patches['loss']), abs=1e-6)
  assert float(from_windows['grad_norm']) == pytest.approx(
      float(from_patches['grad_norm']), rel=1e-5)


def test_patches_sample_without_a_matmul():
  # A HIGHEST-precision dot of three terms (dm_pix.affine_transform's
  # coordinates) has no tiling in XLA:GPU's Triton GEMM: the train step did
  # not compile for A100/H100 (python -m dcsfn_jax.aot, benchmarks/RESULTS.md).
  side = augment.window_size(8)
  batch = {'window': np.zeros((2, side, side, 6), np.uint8),
           'crop_size': np.full((2, 2), 8, np.int32),
           'flip': np.zeros(2, bool), 'degrees': np.zeros(2, np.int32)}
  jaxpr = str(jax.make_jaxpr(
      lambda b: augment.released_patches(b, patch_size=8))(batch))
  # The affine matrix's own 2x2 products may stay; none spans the pixels.
  per_pixel = [shape for shape in re.findall(
      r'\w+\[([\d,]*)\] = dot_general', jaxpr)
               if np.prod([int(d) for d in shape.split(',') if d]) >= 8 * 8]
  assert not per_pixel, per_pixel
