"""The jitted training step: device-count invariance and what it reports."""
import jax
import numpy as np
import optax
import pytest

from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import platforms
from dcsfn_jax.training import schedules
from dcsfn_jax.training import state as state_lib
from dcsfn_jax.training import config as train_config


pytestmark = pytest.mark.usefixtures('fast_compiles')


def _tiny_config():
  config = train_config.base_config()
  config.model.channels = 4
  config.model.num_blocks = 1
  config.model.num_scales = 2
  config.model.convs_per_scale = 1
  config.patch_size = 16
  return config


def _step_on(devices, config, host_state, batch):
  """One jitted step on a mesh of `devices` from a host copy of the state."""
  mesh = parallel.make_mesh(devices)
  model = platforms.model_for(config.model, jax.devices())
  schedule = schedules.multistep_lr(1e-3, (100, 200))
  step = state_lib.make_train_step(model, optax.adam(schedule), schedule, config,
                               mesh)
  state, metrics = step(parallel.replicate(host_state, mesh),
                        parallel.shard_batch(batch, mesh))
  return jax.device_get(state), jax.device_get(metrics)


def test_one_device_equals_four_devices():
  assert jax.device_count() >= 4, 'conftest should simulate 4 CPU devices'
  config = _tiny_config()
  rng = np.random.default_rng(0)
  clean = rng.random((8, 16, 16, 3), dtype=np.float32)
  rainy = np.clip(clean + 0.3 * (rng.random(clean.shape) > 0.9), 0, 1)
  batch = {'rainy': rainy.astype(np.float32), 'clean': clean}

  model = platforms.model_for(config.model, jax.devices())
  # Initialised once on the host, then placed on each mesh.
  optimizer = optax.adam(schedules.multistep_lr(1e-3, (100, 200)))
  host_state = jax.device_get(state_lib.create_train_state(
      model, optimizer, config.patch_size, jax.random.key(0)))
  initial = host_state['params']
  one_state, one_metrics = _step_on(jax.devices()[:1], config, host_state,
                                    batch)
  four_state, four_metrics = _step_on(jax.devices()[:4], config, host_state,
                                      batch)

  assert int(one_state['step']) == int(four_state['step']) == 1
  np.testing.assert_allclose(four_metrics['loss'], one_metrics['loss'],
                             atol=1e-6)
  np.testing.assert_allclose(four_metrics['grad_norm'],
                             one_metrics['grad_norm'], rtol=1e-5)
  for (path, one), four in zip(
      jax.tree_util.tree_flatten_with_path(one_state['params'])[0],
      jax.tree.leaves(four_state['params'])):
    np.testing.assert_allclose(
        four, one, atol=1e-6,
        err_msg=f'{jax.tree_util.keystr(path)} differs after one step')
  # The step really moved the parameters (else the equality says nothing).
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(initial), jax.tree.leaves(one_state['params'])))
  assert moved > 1e-4
  assert one_metrics['learning_rate'] == pytest.approx(1e-3)
  assert one_metrics['params_finite']
