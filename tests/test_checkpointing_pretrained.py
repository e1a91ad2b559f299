"""save_pretrained / load_pretrained: the inference checkpoint contract."""
import json
import logging
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import models


def _config(preset='official'):
  model = models.preset(preset)
  model.update(channels=4, num_blocks=2)
  return ml_collections.ConfigDict({
      'model': model, 'dataset': 'synthetic_rain', 'batch_size': 2,
      'patch_size': 32,
  })


def _params():
  rng = np.random.default_rng(0)
  return {
      'convert': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 3, 4)),
                                        jnp.float32),
                  'bias': rng.normal(size=(4,)).astype(np.float32)},
  }


def test_round_trip_keeps_values_and_config(tmp_path):
  params = _params()
  checkpointing.save_pretrained(tmp_path / 'pretrained', params, _config())
  loaded, config = checkpointing.load_pretrained(tmp_path / 'pretrained')
  np.testing.assert_array_equal(loaded['convert']['kernel'],
                                params['convert']['kernel'])
  np.testing.assert_array_equal(loaded['convert']['bias'],
                                params['convert']['bias'])
  assert isinstance(loaded['convert']['kernel'], np.ndarray)
  assert config.model.channels == 4
  assert config.to_dict() == _config().to_dict()


def test_save_pretrained_needs_model_config(tmp_path):
  with pytest.raises(ValueError, match='model'):
    checkpointing.save_pretrained(tmp_path / 'p', _params(),
                                  ml_collections.ConfigDict({'seed': 0}))


def test_error_names_the_path_and_what_was_found(tmp_path):
  (tmp_path / 'some_file.txt').write_text('not a checkpoint')
  with pytest.raises(FileNotFoundError, match='some_file.txt') as error:
    checkpointing.load_pretrained(tmp_path)
  assert str(tmp_path) in str(error.value)
  with pytest.raises(FileNotFoundError, match='no such directory'):
    checkpointing.load_pretrained(os.path.join(tmp_path, 'missing'))


def _edit_saved_model_config(directory, edit):
  """Rewrites the config JSON that save_pretrained stored in `directory`."""
  path = directory / 'config' / 'metadata'
  saved = json.loads(path.read_text())
  edit(saved['model'])
  path.write_text(json.dumps(saved))


@pytest.mark.parametrize('preset', ['official', 'paper'])
def test_fields_added_after_saving_take_the_preset_default(tmp_path, caplog,
                                                           preset):
  directory = tmp_path / 'saved_before_scan_blocks'
  checkpointing.save_pretrained(directory, _params(), _config(preset))
  # What a checkpoint from before `scan_blocks` existed holds.
  _edit_saved_model_config(directory, lambda model: model.pop('scan_blocks'))
  with caplog.at_level(logging.WARNING):
    _, config = checkpointing.load_pretrained(directory)
  assert config.model.to_dict() == _config(preset).model.to_dict()
  models.validate(config.model)
  assert 'scan_blocks' in caplog.text and repr(preset) in caplog.text


def test_unknown_model_fields_are_still_rejected(tmp_path):
  directory = tmp_path / 'from_the_future'
  checkpointing.save_pretrained(directory, _params(), _config())
  _edit_saved_model_config(directory,
                           lambda model: model.update(warp_factor=9))
  with pytest.raises(ValueError, match='warp_factor') as error:
    checkpointing.load_pretrained(directory)
  assert str(directory) in str(error.value)
