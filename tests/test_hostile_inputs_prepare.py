"""Hostile inputs to `python -m dcsfn_jax.prepare` (issue "trust", cases
6-10): each ends with a non-zero exit, one `error:` line naming the file or
flag and the fix, no traceback, and the user's files byte-identical.

The CLI runs as a subprocess with HOME and TFDS_DATA_DIR inside tmp_path, so
nothing touches the real home folder.
"""
import hashlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

_SMALL = ('--max_size=24', '--num_train=2', '--num_test=1')


def run_prepare(tmp_path, *args, cwd=None, **env_vars):
  env = dict(os.environ, HOME=str(tmp_path / 'home'),
             TFDS_DATA_DIR=str(tmp_path / 'tfds_default'), **env_vars)
  return subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.prepare', *map(str, args)],
      capture_output=True, text=True, env=env, cwd=cwd or tmp_path)


def error_line(done, *fragments) -> str:
  """The one `error:` line of a failed run; it contains every fragment."""
  assert done.returncode != 0, done.stdout + done.stderr
  assert 'Traceback' not in done.stderr, done.stderr
  lines = [l for l in done.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, done.stderr
  for fragment in fragments:
    assert str(fragment) in lines[0], f'{fragment!r} not in {lines[0]!r}'
  return lines[0]


def digests(folder: pathlib.Path) -> dict:
  return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


def save(path: pathlib.Path, key: int, height: int = 16, width: int = 16):
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(key).integers(0, 255, (height, width, 3))
  Image.fromarray(pixels.astype(np.uint8)).save(path)


def photos(folder: pathlib.Path, count: int = 5) -> pathlib.Path:
  for k in range(count):
    save(folder / f'p{k}.png', k, 20, 28)
  return folder


def input_target(root: pathlib.Path, keys=(1, 2)) -> pathlib.Path:
  for split in ('train', 'test'):
    for k in keys:
      save(root / split / 'input' / f'{k}.png', k)
      save(root / split / 'target' / f'{k}.png', 100 + k)
  return root


# --help and the summary ---------------------------------------------------


@pytest.mark.parametrize('flag', ['--help', '--helpfull'])
def test_help_exits_zero(tmp_path, flag):
  done = run_prepare(tmp_path, flag)
  assert done.returncode == 0, done.stderr
  assert '--layout' in done.stdout and '--manual_dir' in done.stdout
  assert 'Traceback' not in done.stderr


def test_real_rain_summary_counts_images(tmp_path):
  for k in range(3):
    save(tmp_path / 'real' / f'photo{k}.png', k)
  done = run_prepare(tmp_path, '--dataset=real_rain',
                     f'--manual_dir={tmp_path / "real"}',
                     f'--data_dir={tmp_path / "data"}')
  assert done.returncode == 0, done.stderr
  assert 'test:      3 images' in done.stdout, done.stdout
  assert 'pairs' not in done.stdout, done.stdout


# 6. ~ and $VARS ------------------------------------------------------------


def test_tilde_in_data_dir_is_the_home_folder(tmp_path):
  done = run_prepare(tmp_path, '--dataset=synthetic_rain', '--data_dir=~/tfds',
                     *_SMALL)
  assert done.returncode == 0, done.stderr
  version_dir = tmp_path / 'home' / 'tfds' / 'derain' / 'synthetic_rain'
  assert (version_dir / '1.0.0' / 'dataset_info.json').is_file()
  assert not (tmp_path / '~').exists(), 'a folder named ~ in the cwd'


def test_variables_in_data_dir_and_manual_dir(tmp_path):
  photo_dir = photos(tmp_path / 'photos')
  before = digests(photo_dir)
  done = run_prepare(tmp_path, '--dataset=synthetic_rain',
                     '--manual_dir=$PHOTOS', '--data_dir=${DATA}/tfds', *_SMALL,
                     PHOTOS=str(photo_dir), DATA=str(tmp_path / 'data'))
  assert done.returncode == 0, done.stderr
  assert (tmp_path / 'data' / 'tfds' / 'derain' / 'synthetic_rain' / '1.0.0'
          / 'dataset_info.json').is_file()
  assert not list(tmp_path.glob('$*')), 'a folder named after the variable'
  assert digests(photo_dir) == before


# 7. no silent side-by-side guess ------------------------------------------


@pytest.mark.parametrize('dataset', ['rain200h', 'rain100h'])
def test_rainy_and_clean_files_are_not_guessed_side_by_side(tmp_path, dataset):
  manual = tmp_path / 'manual'
  for k in range(1, 9):
    save(manual / 'train' / f'rainy_{k}.png', k)
    save(manual / 'train' / f'clean_{k}.png', 100 + k)
  before = digests(manual)
  done = run_prepare(tmp_path, f'--dataset={dataset}', f'--manual_dir={manual}',
                     f'--data_dir={tmp_path / "data"}')
  line = error_line(done, manual / 'train', '--instructions',
                    '--layout side_by_side')
  assert re.search(r'8 files like (rainy|clean)_N\.png, 8 like '
                   r'(clean|rainy)_N\.png', line), line
  assert not (tmp_path / 'data').exists()
  assert digests(manual) == before


def test_side_by_side_only_for_datasets_shipped_so_or_when_asked(tmp_path):
  manual = tmp_path / 'manual'
  for split, keys in (('train', (1, 2, 3)), ('test', (4,))):
    for k in keys:
      save(manual / split / f'{k}.png', k, 16, 32)
  before = digests(manual)
  command = ('--dataset=rain200h', f'--manual_dir={manual}',
             f'--data_dir={tmp_path / "data"}')
  # Rain200H is distributed as separate files, never side by side.
  refused = run_prepare(tmp_path, *command)
  error_line(refused, manual / 'train', '3 files like N.png',
             '--layout side_by_side', '--instructions')
  assert not (tmp_path / 'data').exists()
  asked = run_prepare(tmp_path, *command, '--layout=side_by_side')
  assert asked.returncode == 0, asked.stderr
  assert 'train:      3 pairs, sizes (H x W) from 16x16' in asked.stdout
  assert digests(manual) == before


def test_side_by_side_layout_for_a_dataset_without_one(tmp_path):
  manual = input_target(tmp_path / 'manual')
  done = run_prepare(tmp_path, '--dataset=rain13k', f'--manual_dir={manual}',
                     f'--data_dir={tmp_path / "data"}', '--layout=side_by_side')
  error_line(done, '--layout side_by_side', 'rain13k', '--layout auto')
  assert not (tmp_path / 'data').exists()


# 8. no silent reuse; no leftovers of killed builds ------------------------


def test_prepared_from_another_manual_dir_is_not_reused(tmp_path):
  first = input_target(tmp_path / 'first')
  second = input_target(tmp_path / 'second', keys=(5, 6, 7))
  before = digests(tmp_path)
  data = tmp_path / 'data'
  command = ('--dataset=rain200l', f'--data_dir={data}')
  built = run_prepare(tmp_path, *command, f'--manual_dir={first}')
  assert built.returncode == 0, built.stderr
  again = run_prepare(tmp_path, *command, f'--manual_dir={first}')
  assert again.returncode == 0, again.stderr
  assert 'train:      2 pairs' in again.stdout and str(first) in again.stdout
  other = run_prepare(tmp_path, *command, f'--manual_dir={second}')
  error_line(other, 'already prepared at', data / 'derain' / 'rain200l',
             f'from {first}', '--overwrite')
  rebuilt = run_prepare(tmp_path, *command, f'--manual_dir={second}',
                        '--overwrite')
  assert rebuilt.returncode == 0, rebuilt.stderr
  assert 'train:      3 pairs' in rebuilt.stdout
  error_line(run_prepare(tmp_path, *command, f'--manual_dir={first}'),
             f'from {second}', '--overwrite')
  assert {k: v for k, v in digests(tmp_path).items()
          if not k.startswith('data')} == before


def test_synthetic_photos_dir_is_recorded(tmp_path):
  photo_dir = photos(tmp_path / 'photos')
  data = tmp_path / 'data'
  built = run_prepare(tmp_path, '--dataset=synthetic_rain',
                      f'--data_dir={data}', *_SMALL)
  assert built.returncode == 0, built.stderr
  error_line(run_prepare(tmp_path, '--dataset=synthetic_rain',
                         f'--data_dir={data}', f'--manual_dir={photo_dir}',
                         *_SMALL),
             'already prepared at', "from scikit-image's photos",
             '--overwrite')


def test_leftovers_of_killed_builds_are_removed(tmp_path):
  dataset_dir = tmp_path / 'data' / 'derain' / 'synthetic_rain'
  other_dataset = tmp_path / 'data' / 'derain' / 'rain100h'
  keep = [dataset_dir / 'notes', dataset_dir / 'incomplete.txt',
          other_dataset / 'incomplete.QWERTY_1.0.0' / 'shard']
  for path in keep:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('not tfds leftovers of this dataset')
  leftover = dataset_dir / 'incomplete.ABC123_1.0.0'
  (leftover / 'sub').mkdir(parents=True)
  (leftover / 'derain-train.array_record-00000-of-00001').write_bytes(b'x')
  command = ('--dataset=synthetic_rain', f'--data_dir={tmp_path / "data"}',
             *_SMALL)
  built = run_prepare(tmp_path, *command)
  assert built.returncode == 0, built.stderr
  assert not leftover.exists()
  # A rerun that reuses the dataset also clears a new leftover.
  leftover.mkdir()
  reused = run_prepare(tmp_path, *command)
  assert reused.returncode == 0, reused.stderr
  assert not leftover.exists()
  assert all(path.is_file() for path in keep)
  assert (dataset_dir / '1.0.0' / 'dataset_info.json').is_file()


# 9. corrupt images outside the write step ---------------------------------


@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'empty'])
def test_corrupt_image_in_background_matching(tmp_path, damage):
  manual = tmp_path / 'manual'
  for k in (1, 2, 3):
    save(manual / 'RainTrainH' / f'rain-{k}.png', k, 32, 32)
    save(manual / 'RainTrainH' / f'norain-{k}.png', 100 + k, 32, 32)
  save(manual / 'Rain100H' / 'rain-101.png', 1)
  save(manual / 'Rain100H' / 'norain-101.png', 101)
  corrupt = manual / 'RainTrainH' / 'norain-2.png'
  corrupt.write_bytes({'garbage': b'not a png at all',
                       'truncated': corrupt.read_bytes()[:200],
                       'empty': b''}[damage])
  before = digests(manual)
  done = run_prepare(tmp_path, '--dataset=rain100h', f'--manual_dir={manual}',
                     f'--data_dir={tmp_path / "data"}')
  error_line(done, corrupt, 'is corrupt, truncated or not an image',
             'Replace it with a good copy')
  assert not (tmp_path / 'data').exists()
  assert digests(manual) == before


def test_corrupt_photo_for_synthetic_rain(tmp_path):
  photo_dir = photos(tmp_path / 'photos')
  corrupt = photo_dir / 'p1.png'
  corrupt.write_bytes(corrupt.read_bytes()[:100])
  before = digests(photo_dir)
  done = run_prepare(tmp_path, '--dataset=synthetic_rain',
                     f'--manual_dir={photo_dir}',
                     f'--data_dir={tmp_path / "data"}', *_SMALL)
  error_line(done, corrupt, 'is corrupt, truncated or not an image',
             'Replace it with a good copy')
  assert not (tmp_path / 'data').exists()
  assert digests(photo_dir) == before


# 10. other bad arguments ---------------------------------------------------


@pytest.mark.parametrize('below', ['', 'sub'])
def test_data_dir_that_is_a_file(tmp_path, below):
  a_file = tmp_path / 'data.txt'
  a_file.write_text('my notes')
  data_dir = a_file / below if below else a_file
  done = run_prepare(tmp_path, '--dataset=synthetic_rain',
                     f'--data_dir={data_dir}', *_SMALL)
  error_line(done, '--data_dir', a_file, 'is a file', 'pass a folder')
  assert a_file.read_text() == 'my notes'


@pytest.mark.parametrize('flag', ['--num_train=0', '--num_train=-3',
                                  '--num_test=0', '--max_size=0',
                                  '--max_size=-8', '--seed=-1'])
def test_out_of_range_numbers(tmp_path, flag):
  done = run_prepare(tmp_path, '--dataset=synthetic_rain',
                     f'--data_dir={tmp_path / "data"}', flag)
  error_line(done, flag, 'pass ' + flag.split('=')[0])
  assert not (tmp_path / 'data').exists()


# Trust, round two: rebuilds happen beside the dataset; options are recorded.


def _load_train(data_dir):
  """The names of the train split as the training pipeline reads them."""
  from dcsfn_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.load_split('synthetic_rain', 'train', data_dir=data_dir)


def test_a_failed_overwrite_leaves_the_prepared_dataset(tmp_path):
  photo_dir = photos(tmp_path / 'photos')
  data = tmp_path / 'data'
  command = ('--dataset=synthetic_rain', f'--data_dir={data}',
             f'--manual_dir={photo_dir}', '--max_size=24', '--num_test=1')
  built = run_prepare(tmp_path, *command, '--num_train=2')
  assert built.returncode == 0, built.stderr
  version_dir = data / 'derain' / 'synthetic_rain' / '1.0.0'
  before = digests(version_dir)
  corrupt = photo_dir / 'p1.png'
  corrupt.write_bytes(corrupt.read_bytes()[:100])
  done = run_prepare(tmp_path, *command, '--num_train=3', '--overwrite')
  error_line(done, corrupt, 'is corrupt, truncated or not an image')
  assert digests(version_dir) == before
  assert os.listdir(version_dir.parent) == ['1.0.0']
  assert len(_load_train(data)) == 2


def test_other_synthetic_options_are_not_reused(tmp_path):
  data = tmp_path / 'data'
  command = ('--dataset=synthetic_rain', f'--data_dir={data}')
  built = run_prepare(tmp_path, *command, *_SMALL)
  assert built.returncode == 0, built.stderr
  for flag, recorded in (('--num_train=3', '--num_train=2'),
                         ('--num_test=2', '--num_test=1'),
                         ('--max_size=32', '--max_size=24'),
                         ('--seed=1', '--seed=0')):
    asked = [flag if f.split('=')[0] == flag.split('=')[0] else f
             for f in (*_SMALL, '--seed=0')]
    error_line(run_prepare(tmp_path, *command, *asked),
               f'synthetic_rain is already prepared at '
               f'{data / "derain" / "synthetic_rain" / "1.0.0"} with '
               f'{recorded}; pass --overwrite to rebuild it with {flag}, or '
               'another --data_dir.')
  rebuilt = run_prepare(tmp_path, *command, '--max_size=24', '--num_train=3',
                        '--num_test=1', '--overwrite')
  assert rebuilt.returncode == 0, rebuilt.stderr
  assert 'train:      3 pairs' in rebuilt.stdout
  assert len(_load_train(data)) == 3


@pytest.mark.parametrize('content', ['[' * 100_000, '{"manual_dir": ',
                                     '["a list"]'])
def test_a_damaged_record_is_one_line_naming_it(tmp_path, content):
  data = tmp_path / 'data'
  command = ('--dataset=synthetic_rain', f'--data_dir={data}', *_SMALL)
  built = run_prepare(tmp_path, *command)
  assert built.returncode == 0, built.stderr
  record = data / 'derain' / 'synthetic_rain' / '1.0.0' / 'prepared_from.json'
  record.write_text(content)
  error_line(run_prepare(tmp_path, *command), f'error: {record} is not the '
             'JSON object prepare writes (', '--overwrite to rebuild')


def test_a_killed_overwrite_leaves_the_prepared_dataset(tmp_path):
  data = tmp_path / 'data'
  command = ('--dataset=synthetic_rain', f'--data_dir={data}',
             '--num_test=1', '--max_size=24')
  built = run_prepare(tmp_path, *command, '--num_train=2')
  assert built.returncode == 0, built.stderr
  dataset_dir = data / 'derain' / 'synthetic_rain'
  before = digests(dataset_dir / '1.0.0')
  env = dict(os.environ, HOME=str(tmp_path / 'home'),
             TFDS_DATA_DIR=str(tmp_path / 'tfds_default'))
  rebuild = subprocess.Popen(
      [sys.executable, '-m', 'dcsfn_jax.prepare', *command,
       '--num_train=100000', '--overwrite'], env=env,
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 120
    # Killed while tfds writes into the staging folder.
    while not list(dataset_dir.glob('incomplete.rebuild.*/derain/*/*')):
      assert rebuild.poll() is None and time.monotonic() < deadline
      time.sleep(0.2)
    time.sleep(2)
    assert rebuild.poll() is None
  finally:
    rebuild.send_signal(signal.SIGKILL)
    rebuild.wait()
  assert digests(dataset_dir / '1.0.0') == before
  assert len(_load_train(data)) == 2
  reused = run_prepare(tmp_path, *command, '--num_train=2')
  assert reused.returncode == 0, reused.stderr
  assert os.listdir(dataset_dir) == ['1.0.0']
