"""The persistent compilation cache (`dcsfn_jax.compile_cache`): which folder
it uses, a second run that compiles nothing, and entries that are corrupt or
belong to another key, which never crash a command or change its output."""
import os
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

import cli_checks
from dcsfn_jax import compile_cache

_HOME = '/home/someone'
_ALL = {'DCSFN_COMPILE_CACHE': '/env', 'XDG_CACHE_HOME': '/xdg',
        'HOME': _HOME}


@pytest.mark.parametrize('flag_value, environ, expected', [
    ('/flag', _ALL, '/flag'),
    (None, _ALL, '/env'),
    (None, dict(_ALL, DCSFN_COMPILE_CACHE=''), '/xdg/dcsfn_jax/jax'),
    (None, {'HOME': _HOME}, f'{_HOME}/.cache/dcsfn_jax/jax'),
    (None, {'XDG_CACHE_HOME': 'relative', 'HOME': _HOME},
     f'{_HOME}/.cache/dcsfn_jax/jax'),
    ('off', _ALL, None),
    (None, dict(_ALL, DCSFN_COMPILE_CACHE='OFF'), None),
    ('/flag', dict(_ALL, DCSFN_COMPILE_CACHE='off'), '/flag'),
    # JAX's own setting is JAX's to apply.
    (None, {'JAX_COMPILATION_CACHE_DIR': '/jax', 'HOME': _HOME}, None),
    ('/flag', {'JAX_COMPILATION_CACHE_DIR': '/jax', 'HOME': _HOME}, '/flag'),
])
def test_folder_choice_flag_then_environment_then_xdg_then_home(
    flag_value, environ, expected):
  folder = compile_cache.choose_folder(flag_value, environ)
  assert folder == (expected and pathlib.Path(expected)), (flag_value,
                                                           environ)


def test_the_suite_itself_enables_no_cache():
  # Only a command's main() enables it; tests never write ~/.cache.
  assert os.environ['DCSFN_COMPILE_CACHE'] == 'off'
  assert jax.config.jax_compilation_cache_dir is None


def test_checked_entries_read_back_only_under_their_own_key(tmp_path):
  cache = compile_cache.CheckedFileCache(tmp_path)
  cache.put('key_a', b'program a')
  cache.put('key_b', b'program b')
  assert cache.get('key_a') == b'program a'
  assert cache.get('missing') is None
  files = sorted(tmp_path.iterdir())
  assert [f.name for f in files] == ['key_a-cache', 'key_b-cache']

  (tmp_path / 'key_b-cache').write_bytes((tmp_path / 'key_a-cache')
                                         .read_bytes())
  assert cache.get('key_b') is None, 'another key\'s entry was read'
  (tmp_path / 'key_a-cache').write_bytes(b'garbage' * 20)
  assert cache.get('key_a') is None, 'an overwritten entry was read'
  cache.put('key_a', b'program a')  # a bad entry is replaced
  assert cache.get('key_a') == b'program a'
  assert sorted(tmp_path.iterdir()) == files, 'temporary files left behind'


def _photos(folder):
  """Two photos of different sizes (two programs to compile)."""
  folder.mkdir()
  rng = np.random.default_rng(0)
  for name, shape in (('a.png', (40, 56, 3)), ('b.png', (48, 32, 3))):
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
        folder / name)
  return folder


def _command_args(command, checkpoint_dir, photos, output):
  if command == 'evaluate':
    return [f'--workdir={checkpoint_dir}', f'--output={output}',
            '--panels=false']
  return [f'--workdir={checkpoint_dir}', f'--input={photos}',
          f'--output={output}']


def _outputs(folder):
  """Every output PNG and per-image metric row, by path (summary.json also
  holds the wall time, so it differs between runs)."""
  return {os.fspath(path.relative_to(folder)): path.read_bytes()
          for path in sorted(folder.rglob('*'))
          if path.suffix == '.png' or path.name == 'per_image.csv'}


def _entries(cache):
  return {path.name: path.stat().st_mtime_ns
          for path in cache.glob('*-cache')}


class _Runs:
  """One command, run again and again in one tmp_path (one HOME)."""

  def __init__(self, command, checkpoint_dir, tmp_path):
    self.command = command
    self.checkpoint_dir = checkpoint_dir
    self.tmp_path = tmp_path
    self.photos = _photos(tmp_path / 'photos')
    self.count = 0

  def __call__(self, cache, *flags):
    """Outputs of a run with $DCSFN_COMPILE_CACHE=cache; every program is
    written to the cache, however fast it compiles."""
    self.count += 1
    output = self.tmp_path / f'run{self.count}'
    result = cli_checks.run(
        self.tmp_path, f'dcsfn_jax.{self.command}',
        *_command_args(self.command, self.checkpoint_dir, self.photos,
                       output), *flags,
        env={'DCSFN_COMPILE_CACHE': os.fspath(cache), 'XDG_CACHE_HOME': '',
             'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    outputs = _outputs(output)
    assert outputs, f'{self.command} wrote no outputs'
    return outputs, result


@pytest.fixture(scope='module')
def reference_outputs(checkpoint_dir, tmp_path_factory):
  """reference_outputs(command): the outputs of `command` with the cache
  off, run once per module (each test compares its own runs with them) in a
  HOME of its own, where 'off' must have written no cache."""
  outputs = {}

  def outputs_of(command):
    if command not in outputs:
      folder = tmp_path_factory.mktemp(f'reference_{command}')
      outputs[command], _ = _Runs(command, checkpoint_dir, folder)('off')
      default_cache = folder / 'home' / '.cache' / 'dcsfn_jax' / 'jax'
      assert not default_cache.exists(), 'off still wrote a cache'
    return outputs[command]

  return outputs_of


@pytest.mark.parametrize('command', ['evaluate', 'derain'])
def test_a_second_run_compiles_nothing_and_changes_nothing(
    command, checkpoint_dir, tmp_path, reference_outputs):
  run = _Runs(command, checkpoint_dir, tmp_path)
  default_cache = tmp_path / 'home' / '.cache' / 'dcsfn_jax' / 'jax'
  reference = reference_outputs(command)

  assert run('')[0] == reference  # '': the default folder, under $HOME
  entries = _entries(default_cache)
  assert entries, f'no program of {command} was written to {default_cache}'
  second, result = run('')
  assert second == reference
  # Every compiled program would be written (minimum compile time 0), so
  # unchanged entries mean each program came from the cache.
  assert _entries(default_cache) == entries, 'the second run compiled again'
  assert 'persistent compilation cache' not in result.stderr, result.stderr


def _garbage(entries):
  for path in entries:
    path.write_bytes(os.urandom(path.stat().st_size))


def _truncated(entries):
  for path in entries:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _foreign(entries):
  """Each entry's file holds the next entry's (another key's) contents."""
  contents = [path.read_bytes() for path in entries]
  for path, content in zip(entries, contents[1:] + contents[:1]):
    path.write_bytes(content)


@pytest.mark.parametrize('command', [
    pytest.param('evaluate', marks=pytest.mark.slow), 'derain'])
def test_corrupt_or_foreign_entries_neither_crash_nor_change_outputs(
    command, checkpoint_dir, tmp_path, reference_outputs):
  run = _Runs(command, checkpoint_dir, tmp_path)
  cache = tmp_path / 'cache'
  reference = reference_outputs(command)
  assert run(cache)[0] == reference
  for damage in (_garbage, _truncated, _foreign):
    entries = sorted(cache.glob('*-cache'))
    assert len(entries) >= 2, entries
    damage(entries)
    outputs, _ = run(cache)
    assert outputs == reference, f'{damage.__name__} changed the outputs'
    checked = compile_cache.CheckedFileCache(cache)
    assert all(checked.get(path.name[:-len('-cache')]) is not None
               for path in entries), f'{damage.__name__}: not replaced'


def test_an_unwritable_folder_warns_once_and_runs_without_a_cache(
    checkpoint_dir, tmp_path, reference_outputs):
  (tmp_path / 'a_file').write_text('not a folder')
  run = _Runs('derain', checkpoint_dir, tmp_path)
  outputs, result = run('', f'--compile_cache={tmp_path / "a_file" / "c"}')
  assert outputs == reference_outputs('derain')
  warnings = [line for line in result.stderr.splitlines()
              if 'warning' in line.lower()]
  assert len(warnings) == 1 and warnings[0].startswith(
      f'warning: compilation cache {tmp_path / "a_file" / "c"} is not '
      'writable'), result.stderr


@pytest.mark.parametrize('module', ['train', 'score'])
def test_train_and_score_take_the_flag(module, tmp_path):
  result = cli_checks.run(tmp_path, f'dcsfn_jax.{module}', '--help')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '--compile_cache' in result.stdout, result.stdout
