"""Weight files in and out: exports keep their channel order through
`import_torch` and `derain --torch-checkpoint`, the authors' released files
are read as BGR and the commands say so, and bad or malicious files are one
`error:` line naming the file."""
import contextlib
import hashlib
import os
import pickle
import resource
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax.images import files as image_files
from dcsfn_jax.pytorch import torch_files

torch = pytest.importorskip('torch')
from dcsfn_jax.pytorch.torch_twin import build_torch_model  # pylint: disable=g-import-not-at-top
import cli_checks
import tiny_models

ASSUMED = ("channel_order='bgr', no model config recorded in the file: "
           "assumed the authors' release, the 'official' preset trained on "
           'BGR images')


def _rgb_config():
  """Not a preset: a round trip must carry it (and its rgb) in the file."""
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2, channel_order='rgb')
  return config


@pytest.fixture(scope='module')
def rgb_model(tmp_path_factory):
  return tiny_models.save_checkpoint(
      tmp_path_factory.mktemp('rgb_model') / 'pretrained', _rgb_config(),
      seed=1)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('weights_photos')
  Image.fromarray(np.random.default_rng(0).integers(
      0, 256, (33, 41, 3), dtype=np.uint8)).save(folder / 'rain.png')
  return folder


def _md5(path):
  with open(path, 'rb') as file:
    return hashlib.md5(file.read()).hexdigest()


def test_pth_round_trip_keeps_the_channel_order_and_the_output(
    rgb_model, photos, tmp_path):
  exported = tmp_path / 'new' / 'deeper' / 'dcsfn.pth'  # folders created
  result = cli_checks.run(tmp_path, 'dcsfn_jax.export', f'--workdir={rgb_model}',
                f'--output={exported}')
  cli_checks.assert_quiet(result)
  assert 'they expect RGB images' in result.stdout
  saved = torch.load(exported, weights_only=True)
  assert set(saved) == {'net', 'model_config', 'channel_order'}
  assert saved['channel_order'] == 'rgb'

  imported = tmp_path / 'imported'
  result = cli_checks.run(tmp_path, 'dcsfn_jax.import_torch',
                f'--checkpoint={exported}', f'--output={imported}')
  cli_checks.assert_quiet(result)
  assert ("channel_order='rgb', recorded in the file by dcsfn_jax.export"
          in result.stdout)
  params, config = checkpointing.load_pretrained(imported)
  assert config.model.to_dict() == _rgb_config().to_dict()
  # Same numbers and config as the original: the same derained output.
  jax.tree.map(np.testing.assert_array_equal, params,
               checkpointing.load_pretrained(rgb_model)[0])

  derained = {}
  for name, weights in [('original', f'--workdir={rgb_model}'),
                        ('export', f'--torch-checkpoint={exported}')]:
    result = cli_checks.run(tmp_path, 'dcsfn_jax.derain', weights,
                  f'--input={photos}', f'--output={tmp_path / name}')
    cli_checks.assert_quiet(result)
    assert 'note:' not in result.stdout  # nothing had to be assumed
    derained[name] = image_files.read_image(tmp_path / name / 'rain.png')
  np.testing.assert_array_equal(derained['export'], derained['original'])


def _tiny_released_config():
  config = torch_files.released_model_config('official')
  config.update(channels=4, num_blocks=2, convs_per_scale=2)
  return config


def test_released_files_import_as_bgr_and_say_why(tmp_path):
  torch.manual_seed(0)
  state_dict = build_torch_model(_tiny_released_config()).state_dict()
  plain = tmp_path / 'net_10_epoch'
  torch.save(state_dict, plain)
  training = tmp_path / 'latest_net'  # as the authors' training loop saved it
  torch.save({'net': {f'module.{k}': v for k, v in state_dict.items()},
              'clock_net': 1500, 'opt_net': {'state': {}}}, training)
  before = {path: _md5(path) for path in (plain, training)}
  overrides = ['channels=4', 'num_blocks=2', 'convs_per_scale=2']
  result = cli_checks.run(tmp_path, 'dcsfn_jax.import_torch',
                f'--checkpoint={training}', f'--output={tmp_path / "cli"}',
                *[f'--model_override={o}' for o in overrides])
  cli_checks.assert_quiet(result)
  assert ASSUMED in result.stdout
  summary = torch_files.import_torch_checkpoint(
      os.fspath(plain), os.fspath(tmp_path / 'api'), 'official', overrides)
  assert summary['channel_order_source'] == ASSUMED.split(', ', 1)[1]
  for output in ('cli', 'api'):
    _, config = checkpointing.load_pretrained(tmp_path / output)
    assert config.model.channel_order == 'bgr'
  assert before == {path: _md5(path) for path in before}


def test_derain_says_which_channel_order_it_assumed(photos, tmp_path):
  torch.manual_seed(0)
  path = tmp_path / 'latest_net'
  torch.save(build_torch_model(
      torch_files.released_model_config('official')).state_dict(), path)
  result = cli_checks.run(tmp_path, 'dcsfn_jax.derain', f'--torch-checkpoint={path}',
                f'--input={photos}', f'--output={tmp_path / "out"}')
  cli_checks.assert_quiet(result)
  assert f'note: {path}: {ASSUMED.replace(", no", " (no")}).' in (
      result.stdout)
  assert 'Derained 1 of 1 file(s).' in result.stdout


class _Payload:
  """Pickles to a call of os.system: what a malicious .pth does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def _bad_file(tmp_path, kind):
  if kind == 'random_safetensors':
    path = tmp_path / 'weights.safetensors'
    path.write_bytes(np.random.default_rng(0).bytes(4096))
  elif kind == 'bad_json_safetensors':
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    path = tmp_path / 'weights.safetensors'
    save_file({'conv.weight': np.zeros((2, 2), np.float32)}, os.fspath(path),
              metadata={'dcsfn_model_config': '{bad'})
  else:
    path = tmp_path / 'weights.pth'
    with open(path, 'wb') as file:
      pickle.dump({'net': _Payload(tmp_path / 'PWNED')}, file)
  return path


@pytest.mark.parametrize('kind, command, message', [
    ('random_safetensors', 'import_torch', 'is not a readable .safetensors '
     'file (SafetensorError: '),
    ('bad_json_safetensors', 'derain', 'its recorded model config is not '
     'valid JSON'),
    ('malicious_pickle', 'import_torch', 'it was refused without running any '
     'of its code'),
    ('malicious_pickle', 'derain', 'it was refused without running any of '
     'its code'),
])
def test_bad_weight_files_are_one_line_naming_the_file(photos, tmp_path, kind,
                                                       command, message):
  path = _bad_file(tmp_path, kind)
  before = _md5(path)
  if command == 'import_torch':
    result = cli_checks.run(tmp_path, 'dcsfn_jax.import_torch', f'--checkpoint={path}',
                  f'--output={tmp_path / "imported"}')
  else:
    result = cli_checks.run(tmp_path, 'dcsfn_jax.derain', f'--torch-checkpoint={path}',
                  f'--input={photos}', f'--output={tmp_path / "out"}')
  assert result.returncode == 1
  line = cli_checks.error_line(result)
  assert line.startswith(f'error: {path}') and message in line, line
  assert 'weights_only=False' not in result.stderr
  assert not (tmp_path / 'PWNED').exists()
  assert not (tmp_path / 'imported').exists()
  assert not (tmp_path / 'out').exists()
  assert _md5(path) == before


def test_export_to_an_existing_folder_is_refused(rgb_model, tmp_path):
  folder = tmp_path / 'weights'
  folder.mkdir()
  result = cli_checks.run(tmp_path, 'dcsfn_jax.export', f'--workdir={rgb_model}',
                f'--output={folder}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: --output {folder} is a folder; name a file in it, e.g. '
      f'{folder / "dcsfn.pth"}.')
  assert not os.listdir(folder)


def _run_within(tmp_path, limit_bytes, module, *args):
  """cli_checks.run with the address space capped at `limit_bytes`: a
  regression that builds millions of names fails fast instead of filling
  the machine's memory."""
  def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
  environment = dict(os.environ, HOME=os.fspath(tmp_path / 'home'),
                     TFDS_DATA_DIR=os.fspath(tmp_path / 'tfds'))
  return subprocess.run([sys.executable, '-m', module, *args],
                        capture_output=True, text=True, timeout=300,
                        check=False, env=environment, preexec_fn=cap)


def _bomb(tmp_path, suffix, **fields):
  """A file of one small tensor whose recorded config asks for `fields`."""
  config = models.preset('official')
  config.update(fields)
  weight = np.zeros((20, 3, 3, 3), np.float32)
  path = tmp_path / f'bomb{suffix}'
  if suffix == '.safetensors':
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file({'convert.0.weight': weight}, os.fspath(path),
              metadata={'dcsfn_model_config': config.to_json()})
  else:
    torch.save({'net': {'convert.0.weight': torch.from_numpy(weight)},
                'model_config': config.to_json(), 'channel_order': 'rgb'},
               path)
  assert path.stat().st_size < 40_000
  return path


@pytest.mark.parametrize('suffix, fields, message', [
    ('.safetensors', {'num_blocks': 10**6},
     'its recorded model config field num_blocks=1000000 must be an integer '
     'from 1 to 256.'),
    ('.pth', {'convs_per_scale': 10**9},
     'its recorded model config field convs_per_scale=1000000000 must be an '
     'integer from 1 to 64.'),
    ('.pth', {'num_blocks': 200},  # within bounds: the count refuses it
     'it holds 1 tensors, but its model config (channels=20, '
     'num_blocks=200, num_scales=4, convs_per_scale=4, conv_groups=1) needs '
     '50486.'),
])
@pytest.mark.parametrize('command', ['import_torch', 'derain'])
def test_a_small_file_asking_for_a_huge_model_is_refused_at_once(
    photos, tmp_path, suffix, fields, message, command):
  path = _bomb(tmp_path, suffix, **fields)
  if command == 'import_torch':
    args = (f'--checkpoint={path}', f'--output={tmp_path / "imported"}')
  else:
    args = (f'--torch-checkpoint={path}', f'--input={photos}',
            f'--output={tmp_path / "out"}')
  result = _run_within(tmp_path, 3 * 2**30, f'dcsfn_jax.{command}', *args)
  assert result.returncode == 1, result.stderr[-3000:]
  line = cli_checks.error_line(result)
  assert line.startswith(f'error: {path}') and message in line, line
  assert not (tmp_path / 'imported').exists()
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('command', ['import_torch', 'derain'])
def test_weights_holding_inf_or_nan_are_refused_naming_the_tensor(
    photos, tmp_path, suffix, command):
  torch.manual_seed(0)
  state_dict = {key: value.numpy().copy() for key, value in
                build_torch_model(_tiny_released_config()).state_dict().items()}
  state_dict['merge.0.bias'][1] = np.inf if suffix == '.pth' else np.nan
  path = tmp_path / f'weights{suffix}'
  if suffix == '.pth':
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
  else:
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    save_file(state_dict, os.fspath(path))
  if command == 'import_torch':
    result = cli_checks.run(
        tmp_path, 'dcsfn_jax.import_torch', f'--checkpoint={path}',
        f'--output={tmp_path / "imported"}', '--model_override=channels=4',
        '--model_override=num_blocks=2', '--model_override=convs_per_scale=2')
  else:
    result = cli_checks.run(
        tmp_path, 'dcsfn_jax.derain', f'--torch-checkpoint={path}',
        f'--input={photos}', f'--output={tmp_path / "out"}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f"error: {path}: tensor 'merge.0.bias' holds inf or NaN values; these "
      'weights would turn every photo to garbage. Use a checkpoint from '
      'before the training diverged.')
  assert not (tmp_path / 'imported').exists()
  assert not (tmp_path / 'out').exists()


def test_deeply_nested_recorded_config_is_one_line(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'nested.safetensors'
  save_file({'convert.0.weight': np.zeros((2, 2), np.float32)},
            os.fspath(path),
            metadata={'dcsfn_model_config': '[' * 100_000 + ']' * 100_000})
  result = cli_checks.run(tmp_path, 'dcsfn_jax.import_torch',
                          f'--checkpoint={path}',
                          f'--output={tmp_path / "imported"}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: {path}: its recorded model config is not valid JSON (nested '
      'too deeply); re-export the checkpoint, or strip the metadata and pass '
      '--preset.')


@contextlib.contextmanager
def _tmpfs(folder, size_bytes, read_only=False):
  """A tmpfs of `size_bytes` mounted at `folder` (root only); yields False
  where it cannot be mounted."""
  folder.mkdir()
  options = f'size={size_bytes}' + (',ro' if read_only else '')
  mounted = os.geteuid() == 0 and subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', os.fspath(folder)],
      capture_output=True, check=False).returncode == 0
  try:
    yield mounted
  finally:
    if mounted:
      subprocess.run(['umount', os.fspath(folder)], check=True)


def _export_on_a_full_disk(tmp_path, workdir, output, *flags):
  """`export` where writing fails as on a full disk: `output`'s folder is a
  full tmpfs when one can be mounted, else the file size is capped at 0."""
  def no_writes():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
  mounted = output.parent.stat().st_dev != tmp_path.stat().st_dev
  environment = dict(os.environ, HOME=os.fspath(tmp_path / 'home'))
  return subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.export', f'--workdir={workdir}',
       f'--output={output}', *flags], capture_output=True, text=True,
      timeout=300, check=False, env=environment,
      preexec_fn=None if mounted else no_writes)


def _fill(folder):
  """Fills the file system holding `folder` to its last byte."""
  with open(folder / 'filler', 'wb', buffering=0) as file:
    try:
      while True:
        file.write(b'\0' * 4096)
    except OSError:
      pass


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_export_on_a_full_disk_keeps_the_previous_file(rgb_model, tmp_path,
                                                        suffix):
  disk = tmp_path / 'disk'
  with _tmpfs(disk, 4 * 2**20) as mounted:
    output = disk / f'dcsfn{suffix}'
    result = cli_checks.run(tmp_path, 'dcsfn_jax.export',
                            f'--workdir={rgb_model}', f'--output={output}')
    assert result.returncode == 0, result.stderr
    before = _md5(output)
    if mounted:
      _fill(disk)
    result = _export_on_a_full_disk(tmp_path, rgb_model, output,
                                    '--overwrite', '--weights=raw')
    assert result.returncode == 1
    line = cli_checks.error_line(result)
    assert line.startswith(f'error: --output {output}: writing it failed (')
    assert line.endswith('); the previous file is unchanged.'), line
    assert _md5(output) == before
    assert sorted(os.listdir(disk)) == sorted(
        [output.name] + (['filler'] if mounted else []))

    fresh = disk / f'fresh{suffix}'
    result = _export_on_a_full_disk(tmp_path, rgb_model, fresh)
    assert result.returncode == 1
    assert cli_checks.error_line(result).endswith('; nothing was written.')
    assert not fresh.exists()
    assert sorted(os.listdir(disk)) == sorted(
        [output.name] + (['filler'] if mounted else []))


def test_export_into_a_read_only_folder_is_one_line(rgb_model, tmp_path):
  folder = tmp_path / 'read_only'
  with _tmpfs(folder, 2**20, read_only=True) as mounted:
    if not mounted:
      if os.geteuid() == 0:
        pytest.skip('root writes through permissions; no tmpfs to mount')
      folder.chmod(0o555)
    output = folder / 'dcsfn.pth'
    result = cli_checks.run(tmp_path, 'dcsfn_jax.export',
                            f'--workdir={rgb_model}', f'--output={output}')
    assert result.returncode == 1
    line = cli_checks.error_line(result)
    assert line.startswith(f'error: --output {output}: cannot write in '
                           f'{folder} ('), line
    assert line.endswith('); nothing was written.'), line
    assert not output.exists()


_WITHOUT_TORCH = '''
import runpy, sys
sys.modules['torch'] = sys.modules['safetensors'] = None  # not installed
sys.argv[0] = 'export'
runpy.run_module('dcsfn_jax.export', run_name='__main__')
'''


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_export_without_the_torch_extra_names_it(rgb_model, tmp_path,
                                                 suffix):
  output = tmp_path / f'dcsfn{suffix}'
  result = subprocess.run(
      [sys.executable, '-c', _WITHOUT_TORCH, f'--workdir={rgb_model}',
       f'--output={output}'], capture_output=True, text=True, timeout=300,
      check=False, env=dict(os.environ, HOME=os.fspath(tmp_path / 'home')))
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: writing {suffix} needs the torch extra (torch and '
      "safetensors): pip install -e '.[torch]'")
  assert not output.exists()


@pytest.mark.parametrize('suffix, reading', [
    ('.pth', 'PyTorch checkpoints'), ('.safetensors', '.safetensors')])
def test_import_without_the_torch_extra_names_it(tmp_path, suffix, reading):
  path = tmp_path / f'weights{suffix}'
  path.write_bytes(b'weights')
  script = _WITHOUT_TORCH.replace('export', 'import_torch')
  result = subprocess.run(
      [sys.executable, '-c', script, f'--checkpoint={path}',
       f'--output={tmp_path / "imported"}'], capture_output=True, text=True,
      timeout=300, check=False,
      env=dict(os.environ, HOME=os.fspath(tmp_path / 'home')))
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: reading {reading} needs the torch extra (torch and '
      "safetensors): pip install -e '.[torch]'")
  assert not (tmp_path / 'imported').exists()
