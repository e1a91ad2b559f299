"""Tiny DCSFN checkpoints for tests: seconds to build, any model config."""
import jax
import jax.numpy as jnp
import ml_collections

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax import platforms


def save_checkpoint(directory, model_config, seed=0, **config_fields):
  """A save_pretrained checkpoint of `model_config` with random weights
  drawn from `seed` at `directory`; `config_fields` go beside 'model' (e.g.
  dataset, data_dir); returns `directory`."""
  params = platforms.model_for(model_config, jax.devices()).init(
      jax.random.PRNGKey(seed), jnp.zeros((1, 16, 16, 3)))['params']
  checkpointing.save_pretrained(
      directory, params,
      ml_collections.ConfigDict({'model': model_config, **config_fields}))
  return directory
