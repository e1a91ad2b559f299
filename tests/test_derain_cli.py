"""`python -m dcsfn_jax.derain`: tiling, bad files, overwrite protection,
NIQE, and both kinds of checkpoint."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from dcsfn_jax import checkpointing
from dcsfn_jax import metrics
from dcsfn_jax.inference import derainer as derain
from dcsfn_jax.images import files as image_files
from dcsfn_jax.inference import runner as runner_lib
from dcsfn_jax import models
from dcsfn_jax import platforms


def _tiny_single_config():
  """No pooling and a receptive field of a few pixels, so tiles that
  overlap by more than that reproduce the whole-image output exactly."""
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=1, convs_per_scale=1,
                single=True)
  return config


def _init(config, seed=0):
  return platforms.model_for(config, jax.devices()).init(
      jax.random.PRNGKey(seed), jnp.zeros((1, 16, 16, 3)))['params']


@pytest.fixture(scope='module')
def checkpoint_dir(tmp_path_factory):
  config = ml_collections.ConfigDict({'model': _tiny_single_config()})
  directory = tmp_path_factory.mktemp('derain_checkpoint') / 'pretrained'
  checkpointing.save_pretrained(directory, _init(config.model), config)
  return directory


def _photo(height, width, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  base = 128 + 60 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 9.0)[..., None]
  noise = rng.normal(0, 12, (height, width, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _seam_mask(length, tile, overlap, margin):
  """True within `margin` of a tile edge that lies inside the image."""
  near = np.zeros(length, bool)
  for origin in runner_lib.tile_origins(length, tile, overlap, 1):
    for edge in (origin, origin + tile):
      if 0 < edge < length:
        near[max(0, edge - margin):edge + margin] = True
  return near


def test_tiled_derain_equals_whole_image_derain_away_from_seams():
  config = _tiny_single_config()
  params = _init(config)
  photo = _photo(96, 150)
  # Untiled at native size (no bucket padding, which moves the outputs
  # within the receptive field of the right/bottom border).
  whole = np.asarray(platforms.model_for(config, jax.devices()).apply(
      {'params': params}, metrics.to_float(photo)[None]))[0]
  tiled = derain.Derainer(params, config, tile=48, overlap=12)(photo)
  assert tiled.shape == whole.shape == (96, 150, 3)

  margin = 6  # > the model's receptive-field radius (4 px: four 3x3 convs)
  seams = (_seam_mask(96, 48, 12, margin)[:, None]
           | _seam_mask(150, 48, 12, margin)[None, :])
  assert (~seams).sum() > 2000
  np.testing.assert_allclose(tiled[~seams], whole[~seams], atol=1e-6)
  # Blending keeps the seams close too: no visible tile edges.
  assert np.abs(tiled - whole).max() < 0.05


def test_tile_origins_cover_the_image_with_the_requested_overlap():
  for length in (32, 33, 100, 257):
    origins = runner_lib.tile_origins(length, 32, 8, 1)
    assert origins[0] == 0 and origins[-1] + 32 == max(length, 32)
    assert all(b - a <= 24 for a, b in zip(origins, origins[1:]))
  assert all(o % 8 == 0 for o in runner_lib.tile_origins(256, 64, 16, 8))


def test_pooling_model_tiles_on_its_size_step():
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2, convs_per_scale=1)
  derainer = derain.Derainer(_init(config), config, tile=40, overlap=8)
  assert derainer.tile % models.minimum_size(config) == 0
  output = derainer(_photo(50, 75))
  assert output.shape == (50, 75, 3) and np.all(np.isfinite(output))
  assert derainer.runner.compilations == 1  # every tile has one shape


def _folder(tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(_photo(100, 120)).save(folder / 'street.png')
  Image.fromarray(_photo(40, 30, seed=1)[..., 0]).save(folder / 'gray.png')
  Image.fromarray(_photo(40, 30, seed=2)).save(folder / 'street.jpg')
  (folder / 'notes.txt').write_text('not a photo')
  (folder / 'cut.png').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00')
  return folder


def _run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'dcsfn_jax.derain', *args],
                        capture_output=True, text=True, timeout=300,
                        check=False)


def test_cli_skips_bad_files_reports_niqe_and_never_overwrites(
    checkpoint_dir, tmp_path):
  folder = _folder(tmp_path)
  output = tmp_path / 'out'
  result = _run_cli(f'--workdir={checkpoint_dir}', f'--input={folder}',
                    f'--output={output}', '--panels', '--niqe')
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Derained 3 of 5 file(s).' in result.stdout
  assert 'notes.txt' in result.stdout and 'cut.png' in result.stdout
  assert 'mean NIQE (channel y, crop_border 0)' in result.stdout
  written = sorted(os.listdir(output))
  assert written == ['gray.png', 'niqe.csv', 'panels', 'street_jpg.png',
                     'street_png.png'], written
  assert image_files.read_image(output / 'street_png.png').shape == (
      100, 120, 3)
  assert image_files.read_image(output / 'panels' / 'gray.png').shape[1] == (
      2 * 30 + 4)
  niqe_rows = (output / 'niqe.csv').read_text().splitlines()
  assert niqe_rows[0] == 'file,niqe_input,niqe_output'
  assert niqe_rows[-1].startswith('street.png,') and len(niqe_rows) == 4

  before = {name: os.path.getmtime(output / name) for name in written
            if name.endswith('.png')}
  again = _run_cli(f'--workdir={checkpoint_dir}', f'--input={folder}',
                   f'--output={output}')
  assert again.returncode == 1
  assert again.stdout.count('--overwrite') == 3
  assert before == {name: os.path.getmtime(output / name) for name in before}


def test_derain_files_overwrites_only_when_asked(checkpoint_dir, tmp_path):
  params, model_config = derain.load_model(workdir=checkpoint_dir)
  derainer = derain.Derainer(params, model_config)
  photo = tmp_path / 'one.png'
  Image.fromarray(_photo(33, 35)).save(photo)
  output = tmp_path / 'out'
  output.mkdir()
  (output / 'one.png').write_bytes(b'old')
  results = derain.derain_files(derainer, [os.fspath(photo)], output,
                                progress=False)
  assert 'exists' in results[0].error
  assert (output / 'one.png').read_bytes() == b'old'
  # --overwrite replaces earlier outputs only, never a user's own file.
  results = derain.derain_files(derainer, [os.fspath(photo)], output,
                                overwrite=True, progress=False)
  assert 'not written by dcsfn_jax' in results[0].error
  assert (output / 'one.png').read_bytes() == b'old'
  (output / 'one.png').unlink()
  results = derain.derain_files(derainer, [os.fspath(photo)], output,
                                progress=False)
  first = (output / 'one.png').read_bytes()
  assert not results[0].error and image_files.is_our_output(output / 'one.png')
  results = derain.derain_files(derainer, [os.fspath(photo)], output,
                                overwrite=True, progress=False)
  assert not results[0].error
  assert image_files.read_image(output / 'one.png').shape == (33, 35, 3)
  assert (output / 'one.png').read_bytes() == first


def test_torch_checkpoint_derains_like_the_imported_project_checkpoint(
    tmp_path):
  pytest.importorskip('torch')
  pytest.importorskip('safetensors')
  from dcsfn_jax.pytorch import to_torch_state_dict  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.pytorch.torch_files import write_torch_weights  # pylint: disable=g-import-not-at-top
  config = _tiny_single_config()
  config.channel_order = 'bgr'
  params = _init(config, seed=3)
  weights = tmp_path / 'weights.safetensors'
  write_torch_weights(to_torch_state_dict(params, config), os.fspath(weights),
                      config)
  loaded_params, loaded_config = derain.load_model(
      torch_checkpoint=os.fspath(weights))
  assert loaded_config.channel_order == 'bgr'
  photo = _photo(40, 48)
  np.testing.assert_allclose(
      derain.Derainer(loaded_params, loaded_config)(photo),
      derain.Derainer(params, config)(photo), atol=1e-6)
  with pytest.raises(ValueError, match='exactly one'):
    derain.load_model(workdir='a', torch_checkpoint='b')


def test_cli_errors_name_the_problem(tmp_path):
  result = _run_cli('--workdir=/nonexistent/ckpt', f'--input={tmp_path}/x',
                    f'--output={tmp_path}/o')
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  assert f'{tmp_path}/x' in result.stderr
