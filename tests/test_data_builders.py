"""Every dataset config builds from a tiny fake copy of each accepted layout.

Each fake pair k has its own clean image and rainy = clean + streaks drawn from
seed k, so a loaded example can be checked against the exact images written
(PNG) or within JPEG error, which also catches swapped side-by-side halves.
"""
import pathlib

import numpy as np
import pytest
from PIL import Image

from dcsfn_jax.data import preparation
from dcsfn_jax.data import load_split
from dcsfn_jax.data import synthetic

_STREAKS = synthetic.RainStyle(density=0.05, length=5, width=1, opacity=0.9)
_JPEG_TOLERANCE = 4.0  # mean absolute error, levels


def clean_image(key: int, height: int = 16, width: int = 20) -> np.ndarray:
  rng = np.random.default_rng(key)
  blocks = rng.integers(30, 160, (height // 4 + 1, width // 4 + 1, 3))
  return np.kron(blocks, np.ones((4, 4, 1)))[:height, :width].astype(np.uint8)


def rainy_image(clean: np.ndarray, key: int) -> np.ndarray:
  return synthetic.add_rain(clean, _STREAKS, seed=key)


def save(path: pathlib.Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix == '.jpg':
    Image.fromarray(image).save(path, quality=98, subsampling=0)
  else:
    Image.fromarray(image).save(path)


class Fake:
  """Writes fake layouts and remembers the images of every pair name."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.expected = {}   # name -> (rainy, clean or None)
    self.lossy = False

  def pair(self, key: int, name: str):
    clean = clean_image(key)
    rainy = rainy_image(clean, key)
    self.expected[name] = (rainy, clean)
    return rainy, clean

  def prenet(self, folder: str, keys, rainy_subfolder: bool = False):
    for k in keys:
      rainy, clean = self.pair(k, f'rain-{k}')
      save(self.root / folder / ('rainy' if rainy_subfolder else '') /
           f'rain-{k:03d}.png', rainy)
      save(self.root / folder / f'norain-{k:03d}.png', clean)

  def x2(self, folder: str, keys):
    for k in keys:
      rainy, clean = self.pair(k, f'norain-{k}')
      save(self.root / folder / 'rain' / 'X2' / f'norain-{k}x2.png', rainy)
      save(self.root / folder / 'norain' / f'norain-{k}.png', clean)

  def input_target(self, folder: str, keys):
    for k in keys:
      rainy, clean = self.pair(k, f'img_{k}')
      save(self.root / folder / 'input' / f'img_{k}.png', rainy)
      save(self.root / folder / 'target' / f'img_{k}.png', clean)

  def side_by_side(self, folder: str, keys, clean_side: str,
                   suffix: str = '.png', name_prefix: str = ''):
    self.lossy |= suffix == '.jpg'
    for k in keys:
      rainy, clean = self.pair(k, f'{name_prefix}{k}')
      halves = (clean, rainy) if clean_side == 'left' else (rainy, clean)
      save(self.root / folder / f'{k}{suffix}', np.concatenate(halves, axis=1))

  def in_gt(self, folder: str, keys):
    for k in keys:
      rainy, clean = self.pair(k, str(k))
      save(self.root / folder / f'{k}_in.png', rainy)
      save(self.root / folder / f'{k}_GT.png', clean)

  def ddn(self, folder: str, scenes, variants: int = 2):
    self.lossy = True
    for scene in scenes:
      clean = clean_image(scene)
      save(self.root / folder / 'ground_truth' / f'{scene}.jpg', clean)
      for variant in range(1, variants + 1):
        rainy = rainy_image(clean, 1000 * scene + variant)
        self.expected[f'{scene}_{variant}'] = (rainy, clean)
        save(self.root / folder / 'rainy_image' / f'{scene}_{variant}.jpg',
             rainy)

  def list_file(self, list_name: str, keys):
    lines = []
    for k in keys:
      rainy, clean = self.pair(k, f'rainy/{k}')
      save(self.root / 'rainy' / f'{k}.png', rainy)
      save(self.root / 'gt' / f'{k}.png', clean)
      lines.append(f'/rainy/{k}.png /gt/{k}.png')
    (self.root / list_name).write_text('\n'.join(lines) + '\n')

  def unpaired(self, folder: str, keys):
    for k in keys:
      rainy = rainy_image(clean_image(k), k)
      self.expected[f'photo{k}'] = (rainy, None)
      save(self.root / folder / f'photo{k}.png', rainy)

  def check(self, dataset: str, split: str, data_dir, expected_names):
    source = load_split(dataset, split, data_dir)
    assert len(source) == len(expected_names), (
        f'{dataset}/{split}: {len(source)} examples, want '
        f'{len(expected_names)}')
    names = set()
    for index in range(len(source)):
      example = source[index]
      names.add(example['name'])
      rainy, clean = self.expected[example['name']]
      assert example['rainy'].dtype == np.uint8
      assert (example['height'], example['width']) == rainy.shape[:2]
      self._assert_close(example['rainy'], rainy, f'{example["name"]} rainy')
      if clean is None:
        assert 'clean' not in example
      else:
        self._assert_close(example['clean'], clean, f'{example["name"]} clean')
    assert names == set(expected_names), f'{dataset}/{split} names differ'
    return source

  def _assert_close(self, got, want, what):
    assert got.shape == want.shape, f'{what}: shape {got.shape} != {want.shape}'
    error = np.abs(got.astype(float) - want.astype(float)).mean()
    limit = _JPEG_TOLERANCE if self.lossy else 0.0
    assert error <= limit, f'{what}: mean abs error {error:.2f} > {limit}'


def names(prefix, keys):
  return [f'{prefix}{k}' for k in keys]


def build(dataset, fake: Fake, tmp_path):
  data_dir = tmp_path / 'data'
  preparation.prepare(dataset, manual_dir=fake.root, data_dir=data_dir)
  return data_dir


def test_rain100h_prenet_layout_and_train_1254(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.prenet('train/RainTrainH', range(1, 6))
  # Test pairs 101, 102 share their backgrounds with train pairs 1 and 2.
  for k, background in ((101, 1), (102, 2), (103, 103)):
    clean = clean_image(background)
    rainy = rainy_image(clean, k)
    fake.expected[f'rain-{k}'] = (rainy, clean)
    save(fake.root / 'test/Rain100H/rainy' / f'rain-{k:03d}.png', rainy)
    save(fake.root / 'test/Rain100H' / f'norain-{k:03d}.png', clean)
  data_dir = build('rain100h', fake, tmp_path)
  fake.check('rain100h', 'train', data_dir, names('rain-', range(1, 6)))
  fake.check('rain100h', 'test', data_dir, names('rain-', (101, 102, 103)))
  fake.check('rain100h', 'train_1254', data_dir, names('rain-', (3, 4, 5)))


def test_rain100h_train_1254_from_names_file(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.prenet('RainTrainH', range(1, 5))
  (fake.root / 'train_1254.txt').write_text('rain-2\nrain-004.png\n')
  data_dir = build('rain100h', fake, tmp_path)
  fake.check('rain100h', 'train_1254', data_dir, ['rain-2', 'rain-4'])


@pytest.mark.parametrize('dataset', ['rain100h', 'rain100l', 'rain800'])
def test_side_by_side_clean_left(tmp_path, dataset):
  fake = Fake(tmp_path / 'manual')
  train, test = ('training', 'test_syn') if dataset == 'rain800' else (
      'train', 'test')
  fake.side_by_side(train, range(1, 4), 'left')
  fake.side_by_side(test, range(4, 6), 'left')
  data_dir = build(dataset, fake, tmp_path)
  fake.check(dataset, 'train', data_dir, names('', range(1, 4)))
  fake.check(dataset, 'test', data_dir, names('', range(4, 6)))


def test_rain1200_density_folders_rainy_left(tmp_path):
  fake = Fake(tmp_path / 'manual')
  for offset, density in enumerate(('Heavy', 'Medium', 'Light')):
    fake.side_by_side(f'DID-MDN-training/Rain_{density}/train2018new',
                      range(10 * offset, 10 * offset + 2), 'right', '.jpg',
                      name_prefix=f'Rain_{density}/')
  fake.side_by_side('DID-MDN-test', range(50, 53), 'right', '.jpg')
  data_dir = build('rain1200', fake, tmp_path)
  train = fake.check('rain1200', 'train', data_dir, [
      'Rain_Heavy/0', 'Rain_Heavy/1', 'Rain_Medium/10', 'Rain_Medium/11',
      'Rain_Light/20', 'Rain_Light/21'])
  densities = {train[i]['name']: train[i]['density'] for i in range(len(train))}
  assert densities['Rain_Heavy/0'] == 'heavy'
  assert densities['Rain_Light/21'] == 'light'
  fake.check('rain1200', 'test', data_dir, names('', range(50, 53)))


@pytest.mark.parametrize('dataset', ['rain200h', 'rain200l', 'rain100l'])
def test_x2_layout(tmp_path, dataset):
  fake = Fake(tmp_path / 'manual')
  fake.x2('train', range(1, 4))
  fake.x2('test', range(7, 9))
  data_dir = build(dataset, fake, tmp_path)
  fake.check(dataset, 'train', data_dir, names('norain-', range(1, 4)))
  fake.check(dataset, 'test', data_dir, names('norain-', range(7, 9)))


def test_input_target_layout(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.input_target('train', range(1, 3))
  fake.input_target('test', range(3, 5))
  data_dir = build('rain200h', fake, tmp_path)
  fake.check('rain200h', 'train', data_dir, names('img_', range(1, 3)))
  fake.check('rain200h', 'test', data_dir, names('img_', range(3, 5)))


def test_list_files_for_any_split(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.list_file('train.txt', range(1, 4))
  data_dir = build('rain200l', fake, tmp_path)
  fake.check('rain200l', 'train', data_dir, names('rainy/', range(1, 4)))


def test_rain1400_training_and_testing_folders(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.ddn('training', (1, 2))
  fake.ddn('testing', (901,))
  data_dir = build('rain1400', fake, tmp_path)
  fake.check('rain1400', 'train', data_dir, ['1_1', '1_2', '2_1', '2_2'])
  fake.check('rain1400', 'test', data_dir, ['901_1', '901_2'])


def test_rain1400_one_folder_split_by_scene(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.ddn('.', (899, 900, 901), variants=1)
  data_dir = build('rain1400', fake, tmp_path)
  fake.check('rain1400', 'train', data_dir, ['899_1', '900_1'])
  fake.check('rain1400', 'test', data_dir, ['901_1'])


def test_rain12_in_gt_names(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.in_gt('.', range(1, 4))
  data_dir = build('rain12', fake, tmp_path)
  fake.check('rain12', 'test', data_dir, ['1', '2', '3'])


def test_rain13k_train_and_five_test_sets(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.input_target('train/Rain13K', range(0, 3))
  test_sets = ('Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200')
  for offset, test_set in enumerate(test_sets):
    fake.input_target(f'test/{test_set}', (10 * offset + 10,))
  data_dir = build('rain13k', fake, tmp_path)
  fake.check('rain13k', 'train', data_dir, names('img_', range(0, 3)))
  for offset, test_set in enumerate(test_sets):
    fake.check('rain13k', test_set.lower(), data_dir, [f'img_{10 * offset + 10}'])


def test_spa_data_list_files(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.list_file('real_world.txt', range(1, 4))
  fake.list_file('real_test_1000.txt', range(4, 6))
  (fake.root / 'README.txt').write_text('SPA-Data, see the paper.\n')
  data_dir = build('spa_data', fake, tmp_path)
  fake.check('spa_data', 'train', data_dir, names('rainy/', range(1, 4)))
  fake.check('spa_data', 'test', data_dir, names('rainy/', range(4, 6)))


def test_spa_data_train_list_with_rain_gt_test_folder(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.list_file('real_world.txt', range(1, 3))
  for k in (7, 8):
    rainy, clean = fake.pair(k, f'{k}')
    save(fake.root / 'real_test_1000' / 'rain' / f'{k}.png', rainy)
    save(fake.root / 'real_test_1000' / 'gt' / f'{k}.png', clean)
  data_dir = build('spa_data', fake, tmp_path)
  fake.check('spa_data', 'train', data_dir, names('rainy/', range(1, 3)))
  fake.check('spa_data', 'test', data_dir, ['7', '8'])


def test_real_rain_is_unpaired(tmp_path):
  fake = Fake(tmp_path / 'manual')
  fake.unpaired('.', range(3))
  data_dir = build('real_rain', fake, tmp_path)
  fake.check('real_rain', 'test', data_dir, names('photo', range(3)))


def test_synthetic_rain_from_a_photo_folder(tmp_path):
  photos = tmp_path / 'photos'
  for k in range(5):
    save(photos / f'p{k}.png', clean_image(k, 24, 32))
  data_dir = preparation.prepare_synthetic(tmp_path / 'data', photos_dir=photos,
                                        num_train=4, num_test=2)
  train = load_split('synthetic_rain', 'train', data_dir)
  test = load_split('synthetic_rain', 'test', data_dir)
  assert len(train) == 4 and len(test) == 2
  # The last fifth of the photos (p4) is the test set, disjoint from train.
  assert {test[i]['name'].split('_')[0] for i in range(2)} == {'p4'}
  assert 'p4' not in {train[i]['name'].split('_')[0] for i in range(4)}
  example = train[0]
  assert np.all(example['rainy'] >= example['clean']), 'screen blend brightens'


def test_prepare_cli_summary_and_clear_failure(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  command = [sys.executable, '-m', 'dcsfn_jax.prepare',
             '--data_dir', str(tmp_path / 'data')]
  done = subprocess.run(command + ['--dataset', 'synthetic_rain', '--max_size',
                                   '32', '--num_train', '3', '--num_test', '1'],
                        capture_output=True, text=True, check=True)
  assert 'train:      3 pairs' in done.stdout, done.stdout
  assert 'test:      1 pairs' in done.stdout, done.stdout
  assert str(tmp_path / 'data' / 'derain' / 'synthetic_rain') in done.stdout
  failed = subprocess.run(command + ['--dataset', 'rain800', '--manual_dir',
                                     str(tmp_path / 'missing')],
                          capture_output=True, text=True)
  assert failed.returncode != 0
  assert f'manual_dir {tmp_path / "missing"} is not a folder' in failed.stderr


def test_prenet_tolerates_exactly_the_allowed_unused_backgrounds(tmp_path):
  from dcsfn_jax.data import layouts  # pylint: disable=g-import-not-at-top
  for k in range(1, 6):
    save(tmp_path / f'norain-{k}.png', clean_image(k))
  for k in (1, 2, 3):
    save(tmp_path / f'rain-{k}.png', clean_image(k))
  pairs = layouts.find_prenet(tmp_path, allowed_unused_clean=2)
  assert [p.name for p in pairs] == ['rain-1', 'rain-2', 'rain-3']
  for allowed in (0, 1, 3):
    with pytest.raises(layouts.DatasetLayoutError, match='norain-5.png'):
      layouts.find_prenet(tmp_path, allowed_unused_clean=allowed)


def test_empty_data_dir_means_the_tfds_default(synthetic_data_dir, monkeypatch):
  # A config's unset data_dir is '' (ml_collections fields are typed); it must
  # resolve like None, to tfds's default ($TFDS_DATA_DIR, read by tfds at
  # import), not to a folder named ''.
  from tensorflow_datasets.core import constants
  monkeypatch.setattr(constants, 'DATA_DIR', str(synthetic_data_dir))
  from_default = load_split('synthetic_rain', 'test', '')
  explicit = load_split('synthetic_rain', 'test', synthetic_data_dir)
  assert len(from_default) == len(explicit) > 0
  np.testing.assert_array_equal(from_default[0]['rainy'], explicit[0]['rainy'])
