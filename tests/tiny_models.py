"""Tiny DCSFN checkpoints for tests: seconds to build, any model config."""
import jax
import jax.numpy as jnp
import ml_collections

from dcsfn_jax import checkpointing
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


def save_broken_checkpoint(directory, model_config, value, **config_fields):
  """`save_checkpoint` with one value of one parameter set to `value` (inf
  or nan); returns the parameter's name ('encoder/.../kernel')."""
  params = platforms.model_for(model_config, jax.devices()).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  path, leaf = leaves[len(leaves) // 2]
  broken = leaf.at[(0,) * leaf.ndim].set(value)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: broken if p == path else x, params)
  checkpointing.save_pretrained(
      directory, params,
      ml_collections.ConfigDict({'model': model_config, **config_fields}))
  return '/'.join(key.key for key in path)
