"""Training checkpoints: retention, half-written steps, N -> M devices."""
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax import parallel

_CONFIG = ml_collections.ConfigDict({'model': models.preset('paper'),
                                     'seed': 0})


def _state(mesh, value):
  params = {'conv': {'kernel': jnp.full((3, 3, 3, 4), value, jnp.float32),
                     'bias': jnp.arange(4, dtype=jnp.float32) + value}}
  train_state = {'step': jnp.asarray(int(value), jnp.int32),
                 'rng': jax.random.key_data(jax.random.key(int(value)))}
  return parallel.replicate(params, mesh), parallel.replicate(train_state,
                                                              mesh)


def _save(manager, mesh, step, psnr=None):
  params, train_state = _state(mesh, float(step))
  checkpointing.save(manager, step, params=params, train_state=train_state,
                     data_state={'position': step}, config=_CONFIG,
                     metrics=None if psnr is None else {'psnr': psnr})


def _abstract(tree, mesh):
  sharding = parallel.replicated(mesh)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


def test_keeps_latest_k_plus_best_across_restarts(tmp_path):
  mesh = parallel.make_mesh()
  manager = checkpointing.make_manager(tmp_path, keep=2)
  for step, psnr in [(1, 20.0), (2, 31.0), (3, 25.0), (4, None), (5, 24.0)]:
    _save(manager, mesh, step, psnr)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 4, 5]
  manager.close()
  # A new process must still know step 2 is the best and keep it.
  manager = checkpointing.make_manager(tmp_path, keep=2)
  _save(manager, mesh, 6)
  _save(manager, mesh, 7)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 6, 7]
  manager.close()
  assert checkpointing.resolve(tmp_path, 'best').endswith(
      os.path.join('checkpoints', '2'))
  assert checkpointing.resolve(tmp_path).endswith(
      os.path.join('checkpoints', '7'))
  params, config = checkpointing.load_pretrained(tmp_path, prefer='best')
  np.testing.assert_array_equal(params['conv']['bias'], np.arange(4) + 2.0)
  assert config.to_dict() == _CONFIG.to_dict()


def test_half_written_step_is_ignored(tmp_path):
  mesh = parallel.make_mesh()
  manager = checkpointing.make_manager(tmp_path)
  _save(manager, mesh, 1)
  manager.wait_until_finished()
  manager.close()
  # What a kill during the save of step 2 leaves behind: orbax's temporary
  # directory, partly written.
  steps_dir = tmp_path / checkpointing.CHECKPOINTS_SUBDIR
  partial = steps_dir / '2.orbax-checkpoint-tmp-1234'
  shutil.copytree(steps_dir / '1', partial)
  shutil.rmtree(partial / 'params')
  assert checkpointing.resolve(tmp_path).endswith(
      os.path.join('checkpoints', '1'))
  manager = checkpointing.make_manager(tmp_path)
  assert manager.latest_step() == 1
  _save(manager, mesh, 2)
  manager.wait_until_finished()
  assert manager.latest_step() == 2
  manager.close()


@pytest.mark.parametrize('saved_on,restored_on', [(4, 1), (1, 4), (4, 2)])
def test_restores_onto_a_different_device_count(tmp_path, saved_on,
                                                restored_on):
  assert jax.device_count() >= 4, 'conftest should simulate 4 CPU devices'
  save_mesh = parallel.make_mesh(jax.devices()[:saved_on])
  manager = checkpointing.make_manager(tmp_path)
  _save(manager, save_mesh, 3, psnr=30.0)
  manager.wait_until_finished()
  manager.close()

  restore_mesh = parallel.make_mesh(jax.devices()[:restored_on])
  params, train_state = _state(restore_mesh, 0.0)
  manager = checkpointing.make_manager(tmp_path)
  restored = checkpointing.restore(
      manager, 3, abstract_params=_abstract(params, restore_mesh),
      abstract_train_state=_abstract(train_state, restore_mesh))
  manager.close()
  kernel = restored['params']['conv']['kernel']
  assert kernel.sharding == parallel.replicated(restore_mesh)
  np.testing.assert_array_equal(np.asarray(kernel), 3.0)
  assert int(restored['train_state']['step']) == 3
  np.testing.assert_array_equal(
      np.asarray(restored['train_state']['rng']),
      np.asarray(jax.random.key_data(jax.random.key(3))))
  assert restored['data_state'] == {'position': 3}
  assert restored['config'].to_dict() == _CONFIG.to_dict()


def test_restore_fills_model_fields_added_after_saving(tmp_path):
  mesh = parallel.make_mesh()
  old_config = ml_collections.ConfigDict(_CONFIG.to_dict())
  del old_config.model['scan_blocks']
  params, train_state = _state(mesh, 1.0)
  manager = checkpointing.make_manager(tmp_path)
  checkpointing.save(manager, 1, params=params, train_state=train_state,
                     data_state={}, config=old_config)
  manager.wait_until_finished()
  restored = checkpointing.restore(
      manager, 1, abstract_params=_abstract(params, mesh),
      abstract_train_state=_abstract(train_state, mesh))
  manager.close()
  assert restored['config'].to_dict() == _CONFIG.to_dict()
