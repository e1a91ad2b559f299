"""derain and evaluate give the network's own output by default: each image
runs at its native size, so a saved PNG is round(clip(forward(photo)))."""
import jax
import numpy as np
from PIL import Image
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax.evaluation import evaluator
from dcsfn_jax import platforms
from dcsfn_jax.images import files as image_files
import cli_checks
import tiny_models


def _photo(height, width, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3))
  image = np.kron(coarse, np.ones((4, 4, 1)))[:height, :width]
  return np.clip(image + rng.integers(-20, 21, image.shape), 0,
                 255).astype(np.uint8)


def _native(params, model_config, photo):
  """The network's output at the photo's own size, as float32 [H, W, 3]."""
  model = platforms.model_for(model_config, jax.devices())
  with jax.default_matmul_precision('highest'):
    return np.asarray(model.apply({'params': params},
                                  metrics.to_float(photo)[None]))[0]


def _derain_one(tmp_path, checkpoint_dir, name, photo):
  """`python -m dcsfn_jax.derain` of one photo saved as tmp_path/photos/NAME
  into tmp_path/out; asserts it succeeded."""
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(photo).save(folder / name)
  result = cli_checks.run(tmp_path, 'dcsfn_jax.derain',
                          f'--workdir={checkpoint_dir}', f'--input={folder}',
                          f'--output={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope='module')
def checkpoint_dir(tmp_path_factory):
  """A tiny full (multi-branch) DCSFN with random weights: its pooling and
  cross-scale cells make the output depend on the whole image."""
  model_config = models.preset('official')
  model_config.update(channels=4, num_blocks=1, num_scales=2,
                      convs_per_scale=1)
  return tiny_models.save_checkpoint(
      tmp_path_factory.mktemp('exact') / 'pretrained', model_config)


@pytest.fixture(scope='module')
def model(checkpoint_dir):
  params, config = checkpointing.load_pretrained(checkpoint_dir)
  return params, config.model


def test_derain_png_of_an_odd_size_photo_is_the_native_forward(
    checkpoint_dir, model, tmp_path):
  params, model_config = model
  photo = _photo(57, 83)
  _derain_one(tmp_path, checkpoint_dir, 'odd.png', photo)
  saved = image_files.read_image(tmp_path / 'out' / 'odd.png')
  expected = metrics.to_uint8(_native(params, model_config, photo))
  np.testing.assert_array_equal(saved, expected)


def test_bucketing_is_opt_in_and_changes_the_output(model):
  params, model_config = model
  photo = _photo(57, 83, seed=1)
  example = [{'name': 'odd', 'rainy': photo, 'clean': photo}]
  outputs = {}
  for bucket in (False, True):
    collected = []
    evaluator.Evaluator(model_config, bucket=bucket).run(
        models.runtime_layout(params, model_config), example,
        on_image=collected.append)
    outputs[bucket] = collected[0].derained
  native = _native(params, model_config, photo)
  np.testing.assert_allclose(outputs[False], native, rtol=0, atol=1e-6)
  assert np.max(np.abs(outputs[True] - native)) > 1e-3  # padding moves it


def test_a_photo_below_the_minimum_is_padded_and_the_summary_says_so(
    checkpoint_dir, model, tmp_path):
  params, model_config = model
  minimum = models.minimum_size(model_config)
  photo = _photo(minimum - 3, 2 * minimum, seed=2)
  result = _derain_one(tmp_path, checkpoint_dir, 'small.png', photo)
  assert (f'{2 * minimum}x{minimum - 3} is below the network\'s {minimum} px '
          'minimum; it was padded by reflection') in result.stdout
  # The network pads it itself: still exactly its forward at native size.
  np.testing.assert_array_equal(
      image_files.read_image(tmp_path / 'out' / 'small.png'),
      metrics.to_uint8(_native(params, model_config, photo)))
