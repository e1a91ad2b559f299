"""The grain pipeline: released augmentation, determinism, resume, host shares."""
import collections
import json

import numpy as np
import pytest

from dcsfn_jax.data import load_split
from dcsfn_jax.data import pipeline
from dcsfn_jax.data import sources


def constant_source(num_examples: int, height: int = 90, width: int = 100):
  """Example i is a constant image of value 2 * (i + 1); clean is half of it."""
  return [{'rainy': np.full((height, width, 3), 2 * (i + 1), np.uint8),
           'clean': np.full((height, width, 3), i + 1, np.uint8),
           'name': f'example{i}'} for i in range(num_examples)]


def example_ids(batch) -> list[int]:
  """Source index of each patch, read from its (never black) centre pixel."""
  centre = batch['rainy'][:, 31:33, 31:33, 0].mean(axis=(1, 2))
  return [round(value * 255 / 2) - 1 for value in centre]


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


def test_rotation_is_counter_clockwise_with_black_corners():
  image = np.random.default_rng(0).random((9, 9, 2)).astype(np.float32)
  np.testing.assert_allclose(pipeline.rotate_bilinear(image, 90),
                             np.rot90(image, k=1, axes=(0, 1)), atol=1e-5)
  ones = np.ones((64, 64, 1), np.float32)
  rotated = pipeline.rotate_bilinear(ones, 30)
  assert rotated[0, 0, 0] == 0 and rotated[-1, -1, 0] == 0, 'corners are black'
  assert rotated[32, 32, 0] == pytest.approx(1.0)


def test_resize_keeps_equal_sizes_and_averages_halfway():
  image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
  np.testing.assert_array_equal(pipeline.resize_bilinear(image, 3, 4), image)
  row = np.array([[[0.0], [10.0]]], np.float32)
  np.testing.assert_allclose(pipeline.resize_bilinear(row, 1, 4)[0, :, 0],
                             [0.0, 2.5, 7.5, 10.0])


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
    assert batch['rainy'].shape == (4, 64, 64, 3)
    assert batch['rainy'].dtype == np.float32
    np.testing.assert_allclose(batch['rainy'], 2 * batch['clean'], atol=1e-6)
    # Four draws of one image give four different patches.
    assert len({b.tobytes() for b in batch['rainy']}) == 4


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
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['rainy'], b['rainy'])
    np.testing.assert_array_equal(a['clean'], b['clean'])
  assert not np.array_equal(first[0]['rainy'], other[0]['rainy'])


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
  for want, got in zip(uninterrupted[3:], take(resumed, 3)):
    np.testing.assert_array_equal(want['rainy'], got['rainy'])
    np.testing.assert_array_equal(want['clean'], got['clean'])


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
    for key in ('rainy', 'clean'):
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
