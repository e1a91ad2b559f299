"""What every command does at its boundary (dcsfn_jax/cli.py): a config file
that is not a config, a JAX_PLATFORMS whose jax build or devices are missing, a
--batch_size below 1 and bad --config values are one `error:` line; the
libraries' noise (jax probing for a TPU, tfds listing the folder it is about
to write, "Downloading and preparing") stays out of the output."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dcsfn_jax import cli
from dcsfn_jax import models
from dcsfn_jax import parallel
import cli_checks
import tiny_models

DEMO = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'demo.py'


@pytest.fixture(scope='module')
def model(tmp_path_factory):
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2)
  return tiny_models.save_checkpoint(
      tmp_path_factory.mktemp('boundary_model') / 'pretrained', config)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('boundary_photos')
  Image.fromarray(np.random.default_rng(0).integers(
      0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / 'rain.png')
  return folder


@pytest.mark.parametrize('returned, named', [('{"seed": 1}', 'dict'),
                                             ('None', 'None'),
                                             ('[1, 2]', 'list')])
def test_a_config_file_that_returns_no_config_is_one_line(tmp_path, returned,
                                                          named):
  config_file = tmp_path / 'my_config.py'
  config_file.write_text(f'def get_config():\n  return {returned}\n')
  result = cli_checks.run(tmp_path, 'dcsfn_jax.train',
                          f'--config={config_file}',
                          f'--workdir={tmp_path / "run"}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: --config {config_file}: its get_config() returns {named}, '
      'not an ml_collections.ConfigDict; start it from '
      'dcsfn_jax.training.config.base_config(), as configs/demo.py does.')
  assert 'WARNING' not in result.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('override, message', [
    ('seed=-1', 'seed=-1 must be an integer from 0 to 2147483647.'),
    ('l1_weight=nan', 'l1_weight=nan must be a finite number.'),
    ('learning_rate=inf', 'learning_rate=inf must be a finite number.'),
])
def test_bad_config_values_are_one_line_naming_the_field(tmp_path, override,
                                                          message):
  result = cli_checks.run(tmp_path, 'dcsfn_jax.train',
                          f'--config={DEMO}:smoke', f'--config.{override}',
                          f'--workdir={tmp_path / "run"}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: Invalid training config: {message}')


def _missing(platform):
  """Whether this install lacks the jax build for `platform`."""
  words = cli._PLATFORM_BUILDS[platform][0]  # pylint: disable=protected-access
  return not any(word in name for word in words
                 for name in cli._installed_jax_plugins())  # pylint: disable=protected-access


@pytest.mark.parametrize('platform, extra', [('cuda', 'cuda12'),
                                             ('tpu', 'tpu')])
@pytest.mark.parametrize('command', ['derain', 'export', 'train'])
def test_jax_platforms_without_its_build_or_devices_is_one_line(
    model, photos, tmp_path, platform, extra, command):
  # The test extra installs libtpu (for compiling with dcsfn_jax.aot), so on
  # a CPU host the tpu case is the missing devices, the cuda one the build.
  if _missing(platform):
    expected = (
        f'error: JAX_PLATFORMS={platform} asks for the {platform} build of '
        f"jax, which is not installed; install it with pip install -e "
        f"'.[{extra}]', or unset JAX_PLATFORMS to run on the CPU.")
  elif not parallel.host_has_devices(platform):
    expected = (
        f'error: JAX_PLATFORMS={platform} asks for {platform} devices, and '
        'this host has none (its jax build can only compile for them: '
        'python -m dcsfn_jax.aot); run on a host with them, or unset '
        'JAX_PLATFORMS to run on the CPU.')
  else:
    pytest.skip(f'this host has {platform} devices')
  args = {'derain': (f'--workdir={model}', f'--input={photos}',
                     f'--output={tmp_path / "out"}'),
          'export': (f'--workdir={model}', f'--output={tmp_path / "w.pth"}'),
          'train': (f'--config={DEMO}:smoke',
                    f'--workdir={tmp_path / "run"}')}[command]
  result = cli_checks.run(tmp_path, f'dcsfn_jax.{command}', *args,
                          env={'JAX_PLATFORMS': platform})
  assert result.returncode == 1
  assert cli_checks.error_line(result) == expected
  assert not (tmp_path / 'out').exists() and not (tmp_path / 'run').exists()


@pytest.mark.parametrize('value', ['0', '-1'])
@pytest.mark.parametrize('command', ['derain', 'evaluate'])
def test_batch_size_below_one_is_refused(model, photos, tmp_path, value,
                                         command):
  args = ((f'--input={photos}',) if command == 'derain' else ())
  result = cli_checks.run(tmp_path, f'dcsfn_jax.{command}',
                          f'--workdir={model}', *args,
                          f'--output={tmp_path / "out"}',
                          f'--batch_size={value}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: flag --batch_size={value}: {value} is not a positive integer '
      '(--help lists the flags)')
  assert not (tmp_path / 'out').exists()


_NOISE = ("Unable to initialize backend 'tpu'", 'has no dataset_info.json',
          'Downloading and preparing dataset', 'downloaded and prepared to')


def test_prepare_and_derain_print_no_library_noise(model, photos, tmp_path):
  # --verbosity=0 shows INFO logs: what the filters drop must not be there.
  prepared = cli_checks.run(
      tmp_path, 'dcsfn_jax.prepare', '--dataset=synthetic_rain',
      f'--data_dir={tmp_path / "data"}', '--max_size=24', '--num_train=2',
      '--num_test=1', '--verbosity=0')
  assert prepared.returncode == 0, prepared.stderr
  derained = cli_checks.run(
      tmp_path, 'dcsfn_jax.derain', f'--workdir={model}', f'--input={photos}',
      f'--output={tmp_path / "out"}', '--verbosity=0')
  assert derained.returncode == 0, derained.stderr
  for result in (prepared, derained):
    output = result.stdout + result.stderr
    assert not [noise for noise in _NOISE if noise in output], output


def test_prepare_is_quiet_by_default(tmp_path):
  result = cli_checks.run(
      tmp_path, 'dcsfn_jax.prepare', '--dataset=synthetic_rain',
      f'--data_dir={tmp_path / "data"}', '--max_size=24', '--num_train=2',
      '--num_test=1')
  assert result.returncode == 0, result.stderr
  assert result.stderr == '', result.stderr


def test_a_build_outside_prepare_shows_no_progress_bar_in_a_log(tmp_path):
  # train's --config.prepare_data builds through the same function.
  script = ('import sys; from dcsfn_jax import data; '
            'data.prepare_synthetic(sys.argv[1], max_size=24, num_train=2, '
            'num_test=1)')
  result = subprocess.run([sys.executable, '-c', script,
                           os.fspath(tmp_path / 'data')],
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert 'Generating splits' not in result.stderr, result.stderr[-2000:]
