"""The grain pipeline: the released draws and host windows, determinism,
resume, host shares. The windows' augmentation on the device is tested in
tests/test_data_augment.py."""
import collections
import json

import numpy as np
import pytest

from dcsfn_jax.data import augment
from dcsfn_jax.data import load_split
from dcsfn_jax.data import pipeline
from dcsfn_jax.data import sources

WINDOW = augment.window_size(64)
MARGIN = augment.WINDOW_MARGIN


def constant_source(num_examples: int, height: int = 90, width: int = 100):
  """Example i is a constant image of value 2 * (i + 1); clean is half of it."""
  return [{'rainy': np.full((height, width, 3), 2 * (i + 1), np.uint8),
           'clean': np.full((height, width, 3), i + 1, np.uint8),
           'name': f'example{i}'} for i in range(num_examples)]


def example_ids(batch) -> list[int]:
  """Source index of each example of a constant_source, read from a pixel of
  its window (augment='released') or patch ('crop')."""
  if 'window' in batch:
    return [int(value) // 2 - 1 for value in batch['window'][:, 0, 0, 0]]
  return [round(value * 255 / 2) - 1 for value in batch['rainy'][:, 0, 0, 0]]


def assert_same_batches(want, got):
  for a, b in zip(want, got, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_draw_ranges_match_the_released_recipe():
  rng = np.random.default_rng(0)
  draws = [pipeline.draw_released(rng, 200, 300, 64) for _ in range(3000)]
  assert {d.crop_height for d in draws} == set(range(48, 81))
  assert {d.crop_width for d in draws} == set(range(48, 81))
  assert {d.degrees for d in draws} == set(range(-30, 31))
  assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
  assert all(0 <= d.top <= 200 - d.crop_height and
             0 <= d.left <= 300 - d.crop_width for d in draws)
  small = pipeline.draw_released(rng, 50, 40, 64)
  assert small.crop_height <= 50 and small.crop_width <= 40


def test_the_draws_and_the_shuffle_keep_their_random_streams():
  # Pinned from the host augmentation this pipeline replaced: moving the
  # geometry to the device changed no draw.
  draws = [pipeline.draw_released(pipeline._example_rng(seed, epoch, index),
                                  90, 100, 64)
           for seed, epoch, index in ((66, 0, 3), (66, 1, 3), (7, 2, 11))]
  assert draws == [
      pipeline.ReleasedDraw(top=25, left=17, crop_height=48, crop_width=53,
                            flip=False, degrees=-26),
      pipeline.ReleasedDraw(top=4, left=19, crop_height=78, crop_width=52,
                            flip=False, degrees=-19),
      pipeline.ReleasedDraw(top=0, left=23, crop_height=80, crop_width=67,
                            flip=False, degrees=-2)]
  np.testing.assert_array_equal(pipeline.epoch_permutation(66, 0, 10),
                                [7, 2, 5, 4, 6, 0, 1, 3, 9, 8])


def test_window_holds_the_drawn_crop_with_the_image_edges_replicated():
  # Pixel (y, x) of example i holds (y, x, i), so a window shows where it was
  # cut from and which example it is.
  height, width = 90, 100
  rows, cols = np.indices((height, width))
  source = [{'rainy': np.stack([rows, cols, np.full_like(rows, i)],
                               -1).astype(np.uint8),
             'clean': np.stack([cols, rows, np.full_like(rows, i)],
                               -1).astype(np.uint8),
             'name': f'x{i}'} for i in range(8)]
  batch = next(pipeline.train_iterator(source, global_batch_size=8, seed=5,
                                       process_index=0, process_count=1))
  assert batch['window'].shape == (8, WINDOW, WINDOW, 6)
  assert batch['window'].dtype == np.uint8
  assert batch['crop_size'].dtype == np.int32
  assert batch['degrees'].dtype == np.int32
  assert batch['flip'].dtype == bool
  for slot, window in enumerate(batch['window']):
    index = int(window[0, 0, 2])
    draw = pipeline.draw_released(pipeline._example_rng(5, 0, index), height,
                                  width, 64)
    assert tuple(batch['crop_size'][slot]) == (draw.crop_height,
                                               draw.crop_width)
    assert bool(batch['flip'][slot]) == draw.flip
    assert int(batch['degrees'][slot]) == draw.degrees
    offsets = np.arange(WINDOW) - MARGIN
    want_rows = np.clip(draw.top + offsets, 0, height - 1)
    want_cols = np.clip(draw.left + offsets, 0, width - 1)
    np.testing.assert_array_equal(window[:, 0, 0], want_rows)
    np.testing.assert_array_equal(window[0, :, 1], want_cols)
    np.testing.assert_array_equal(window[..., 3], window[..., 1])  # clean
    np.testing.assert_array_equal(window[..., 4], window[..., 0])


@pytest.mark.parametrize('augment', ['released', 'crop'])
def test_rainy_and_clean_get_the_same_geometry(augment):
  # clean = rainy / 2 everywhere, and every step is linear with zero fill, so
  # any difference in geometry breaks the ratio.
  rng = np.random.default_rng(1)
  rainy = (rng.integers(0, 128, (70, 90, 3)) * 2).astype(np.uint8)
  source = [{'rainy': rainy, 'clean': rainy // 2, 'name': 'x'}] * 4
  iterator = pipeline.train_iterator(source, global_batch_size=4, seed=3,
                                     augment=augment, process_index=0,
                                     process_count=1)
  for batch in take(iterator, 3):
    if augment == 'released':
      # The same window for both; the device gives both the same map.
      windows = batch['window'].astype(np.int32)
      np.testing.assert_array_equal(windows[..., :3], 2 * windows[..., 3:])
      patches = batch['window']
    else:
      assert batch['rainy'].shape == (4, 64, 64, 3)
      assert batch['rainy'].dtype == np.float32
      np.testing.assert_allclose(batch['rainy'], 2 * batch['clean'],
                                 atol=1e-6)
      patches = batch['rainy']
    # Four draws of one image give four different windows or patches.
    assert len({p.tobytes() for p in patches}) == 4


def test_crop_mode_is_an_exact_crop():
  image = np.random.default_rng(2).integers(0, 256, (70, 80, 3), np.uint8)
  source = [{'rainy': image, 'clean': image, 'name': 'x'}] * 2
  batch = next(pipeline.train_iterator(source, global_batch_size=2, seed=0,
                                       augment='crop', patch_size=32,
                                       process_index=0, process_count=1))
  patch = np.round(batch['rainy'][0] * 255).astype(np.uint8)
  windows = np.lib.stride_tricks.sliding_window_view(image, (32, 32, 3))
  assert np.any(np.all(windows == patch, axis=(-3, -2, -1)))


def test_epochs_are_permutations_with_drop_last():
  source = constant_source(10)
  iterator = pipeline.train_iterator(source, global_batch_size=4, seed=0,
                                     process_index=0, process_count=1)
  epochs = [sum((example_ids(b) for b in take(iterator, 2)), [])
            for _ in range(3)]
  for ids in epochs:
    assert len(set(ids)) == 8, f'an epoch repeats an example: {ids}'
    assert set(ids) <= set(range(10))
  assert epochs[0] != epochs[1], 'each epoch reshuffles'


def test_same_seed_same_batches_with_or_without_cache(synthetic_data_dir):
  source = load_split('synthetic_rain', 'train', synthetic_data_dir)

  def batches(seed, cache_mib=1024):
    return take(pipeline.train_iterator(source, global_batch_size=4, seed=seed,
                                        process_index=0, process_count=1,
                                        cache_mib=cache_mib), 5)

  first, again, other = batches(5), batches(5, cache_mib=0), batches(6)
  assert_same_batches(first, again)
  assert not np.array_equal(first[0]['window'], other[0]['window'])


def test_saved_state_resumes_the_exact_stream(synthetic_data_dir):
  source = load_split('synthetic_rain', 'train', synthetic_data_dir)

  def fresh():
    return pipeline.train_iterator(source, global_batch_size=4, seed=7,
                                   process_index=0, process_count=1)

  uninterrupted = take(fresh(), 6)  # 2 steps per epoch: crosses two epochs
  interrupted = fresh()
  take(interrupted, 3)
  state = json.loads(json.dumps(interrupted.get_state()))
  resumed = fresh()
  resumed.set_state(state)
  assert_same_batches(uninterrupted[3:], take(resumed, 3))


def test_host_parts_are_disjoint_and_make_the_global_batch():
  source = constant_source(13)
  whole = take(pipeline.train_iterator(source, global_batch_size=6, seed=1,
                                       process_index=0, process_count=1), 5)
  parts = [take(pipeline.train_iterator(source, global_batch_size=6, seed=1,
                                        process_index=host, process_count=3),
                5) for host in range(3)]
  for step, global_batch in enumerate(whole):
    host_ids = [example_ids(parts[host][step]) for host in range(3)]
    assert all(len(ids) == 2 for ids in host_ids)
    flat = sum(host_ids, [])
    assert len(set(flat)) == 6, f'step {step}: hosts overlap: {host_ids}'
    for key in global_batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[host][step][key] for host in range(3)]),
          global_batch[key])


def test_bad_batch_and_host_arguments():
  source = constant_source(4)
  with pytest.raises(ValueError, match='not divisible by process_count=3'):
    pipeline.train_iterator(source, global_batch_size=4, seed=0,
                            process_index=0, process_count=3)
  with pytest.raises(ValueError, match='fewer than global_batch_size=8'):
    pipeline.train_iterator(source, global_batch_size=8, seed=0,
                            process_index=0, process_count=1)
  unpaired = [{'rainy': np.zeros((8, 8, 3), np.uint8), 'name': 'x'}] * 2
  with pytest.raises(ValueError, match='no clean images'):
    pipeline.train_iterator(unpaired, global_batch_size=2, seed=0,
                            process_index=0, process_count=1)
  with pytest.raises(ValueError, match='augment'):
    pipeline.train_iterator(source, global_batch_size=2, seed=0,
                            augment='mixup', process_index=0, process_count=1)


def test_process_shares_are_disjoint_and_cover_the_split(synthetic_data_dir):
  source = load_split('synthetic_rain', 'test', synthetic_data_dir)
  names = [source[i]['name'] for i in range(len(source))]
  whole = sources.process_share(source, 0, 1)
  assert [whole[i]['name'] for i in range(len(whole))] == names
  np.testing.assert_array_equal(whole[1]['rainy'], source[1]['rainy'])
  per_host = [[share[i]['name'] for i in range(len(share))]
              for share in (sources.process_share(source, host, 3)
                            for host in range(3))]
  assert collections.Counter(sum(per_host, [])) == collections.Counter(names)
  head = sources.first(source, 2)
  assert len(head) == 2 and head[1]['name'] == names[1]
  assert len(sources.first(source, 100)) == len(source)
  with pytest.raises(IndexError):
    head[2]  # pylint: disable=pointless-statement
