"""Every bad input gives an error naming the files and the fix, and leaves no
dataset (nor any folder the build created) behind."""
import numpy as np
import pytest
from PIL import Image

from dcsfn_jax.data import DatasetLayoutError
from dcsfn_jax.data import DatasetNotPreparedError
from dcsfn_jax.data import preparation
from dcsfn_jax.data import load_split


def save(path, image):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


def image(height=12, width=16, value=90):
  return np.full((height, width, 3), value, np.uint8)


def prepare_fails(dataset, manual_dir, data_dir, *fragments):
  with pytest.raises(DatasetLayoutError) as error:
    preparation.prepare(dataset, manual_dir=manual_dir, data_dir=data_dir)
  message = str(error.value)
  for fragment in fragments:
    assert str(fragment) in message, f'{fragment!r} not in:\n{message}'
  assert not data_dir.exists(), (
      f'a failed build left {sorted(p.name for p in data_dir.rglob("*"))}')
  return message


def test_missing_manual_dir(tmp_path):
  prepare_fails('rain100h', tmp_path / 'nowhere', tmp_path / 'data',
                tmp_path / 'nowhere', 'is not a folder', 'RainTrainH',
                'side-by-side')


def test_manual_dir_in_no_layout_lists_expected_and_found(tmp_path):
  (tmp_path / 'manual' / 'stuff').mkdir(parents=True)
  (tmp_path / 'manual' / 'readme.md').write_text('hi')
  prepare_fails('rain13k', tmp_path / 'manual', tmp_path / 'data',
                'no split folder', 'stuff/', 'readme.md', 'train/Rain13K/',
                'input/target')


def test_split_folder_in_no_layout(tmp_path):
  (tmp_path / 'manual' / 'train').mkdir(parents=True)
  (tmp_path / 'manual' / 'train' / 'notes.txt').write_text('no images')
  prepare_fails('rain200h', tmp_path / 'manual', tmp_path / 'data',
                "split 'train'", 'none of the accepted layouts', 'notes.txt')


def test_rainy_without_clean_partner(tmp_path):
  manual = tmp_path / 'manual' / 'RainTrainH'
  for k in (1, 2):
    save(manual / f'rain-{k}.png', image())
  save(manual / 'norain-1.png', image())
  prepare_fails('rain100h', tmp_path / 'manual', tmp_path / 'data',
                'without a clean image', manual / 'rain-2.png')


def test_clean_without_rainy_partner(tmp_path):
  manual = tmp_path / 'manual' / 'train'
  save(manual / 'input' / 'a.png', image())
  save(manual / 'target' / 'a.png', image())
  save(manual / 'target' / 'b.png', image())
  prepare_fails('rain200l', tmp_path / 'manual', tmp_path / 'data',
                'without a rainy image', manual / 'target' / 'b.png')


def test_pair_sizes_differ(tmp_path):
  manual = tmp_path / 'manual' / 'test'
  save(manual / 'input' / 'a.png', image(12, 16))
  save(manual / 'target' / 'a.png', image(12, 18))
  prepare_fails('rain200h', tmp_path / 'manual', tmp_path / 'data',
                manual / 'input' / 'a.png', '16x12',
                manual / 'target' / 'a.png', '18x12')


def test_truncated_image(tmp_path):
  manual = tmp_path / 'manual' / 'train'
  save(manual / 'input' / 'a.png', image())
  save(manual / 'target' / 'a.png', image())
  noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
  save(manual / 'input' / 'b.png', noisy)
  save(manual / 'target' / 'b.png', noisy)
  truncated = manual / 'input' / 'b.png'
  truncated.write_bytes(truncated.read_bytes()[:400])
  prepare_fails('rain13k', tmp_path / 'manual', tmp_path / 'data',
                truncated, 'corrupt, truncated')


def test_side_by_side_with_odd_width(tmp_path):
  manual = tmp_path / 'manual' / 'test'
  save(manual / '1.png', image(10, 20))
  save(manual / '2.png', image(10, 21))
  prepare_fails('rain800', tmp_path / 'manual', tmp_path / 'data',
                manual / '2.png', '21x10', 'even width')


def test_list_file_with_missing_image(tmp_path):
  manual = tmp_path / 'manual'
  save(manual / 'rain' / '1.png', image())
  (manual / 'real_world.txt').write_text('/rain/1.png /gt/1.png\n')
  prepare_fails('spa_data', manual, tmp_path / 'data', 'real_world.txt',
                'line 1', "'/gt/1.png' is not a file")


def test_failure_keeps_other_prepared_datasets(tmp_path):
  data_dir = tmp_path / 'data'
  preparation.prepare_synthetic(data_dir, max_size=24, num_train=2, num_test=1)
  manual = tmp_path / 'manual' / 'test'
  save(manual / '1.png', image(10, 21))
  with pytest.raises(DatasetLayoutError):
    preparation.prepare('rain800', manual_dir=tmp_path / 'manual',
                     data_dir=data_dir)
  assert not (data_dir / 'derain' / 'rain800').exists()
  assert len(load_split('synthetic_rain', 'train', data_dir)) == 2


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
  with pytest.raises(DatasetNotPreparedError) as error:
    load_split('rain100l', 'test', tmp_path / 'data')
  assert ('python -m dcsfn_jax.prepare --dataset rain100l --manual_dir '
          f'DIR --data_dir {tmp_path / "data"}') in str(error.value)


def test_unknown_dataset_and_split(tmp_path, synthetic_data_dir):
  with pytest.raises(ValueError, match='rain100h'):
    load_split('rain101', 'test', tmp_path)
  with pytest.raises(ValueError, match='has no split .validation.*train'):
    load_split('synthetic_rain', 'validation', synthetic_data_dir)


@pytest.mark.parametrize('names, pair_up', [
    (['rainy_1.png', 'clean_1.png', 'rainy_2.png', 'clean_2.png'], True),
    (['1_rain.png', '1_gt.png', '2_rain.png', '2_gt.png'], True),
    (['street_rain.jpg', 'street_clean.jpg', 'park_rain.jpg',
      'park_clean.jpg'], True),
    (['1.png', '2.png', '10.png'], False),        # Rain800, DID-MDN
    (['rain-001.png', 'rain-002.png'], False),
    (['street.png', 'park.png', 'train_1.png'], False),
])
def test_side_by_side_names_that_pair_up(tmp_path, names, pair_up):
  from dcsfn_jax.data import layouts  # pylint: disable=g-import-not-at-top
  for k, name in enumerate(names):
    save(tmp_path / name, image(10, 20, value=10 * k))
  assert layouts.names_pair_up(layouts.list_images(tmp_path)) == pair_up
  found = layouts.find_side_by_side(tmp_path, 'left')
  assert (found is None) == pair_up
  assert len(layouts.find_side_by_side(tmp_path, 'left',
                                       check_names=False)) == len(names)


def test_corrupt_clean_image_in_background_matching(tmp_path):
  manual = tmp_path / 'manual'
  for k in (1, 2):
    save(manual / 'RainTrainH' / f'rain-{k}.png', image(value=k))
    save(manual / 'RainTrainH' / f'norain-{k}.png', image(value=k))
  save(manual / 'Rain100H' / 'rain-9.png', image())
  save(manual / 'Rain100H' / 'norain-9.png', image())
  (manual / 'RainTrainH' / 'norain-2.png').write_bytes(b'')
  prepare_fails('rain100h', manual, tmp_path / 'data',
                manual / 'RainTrainH' / 'norain-2.png', 'corrupt, truncated')
