"""save_pretrained / load_pretrained: the inference checkpoint contract."""
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcsfn_jax import checkpointing


def _config():
  return ml_collections.ConfigDict({
      'model': {'channels': 4, 'num_blocks': 2, 'recurrent_unit': 'GRU'},
      'dataset': 'synthetic_rain', 'batch_size': 2, 'patch_size': 32,
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
