"""EMA of the parameters and gradient accumulation: exact, and checked."""
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import platforms
from dcsfn_jax.training import config as train_config
from dcsfn_jax.training import inputs
from dcsfn_jax.training import schedules
from dcsfn_jax.training import state as state_lib
from dcsfn_jax.training import trainer
import smoke_config

pytestmark = pytest.mark.usefixtures('fast_compiles')


def _config(**fields):
  config = train_config.base_config()
  config.model.update(channels=4, num_blocks=1, num_scales=2,
                      convs_per_scale=1)
  config.patch_size = 16
  config.l1_weight = 0.5  # both loss terms must average exactly
  config.update(fields)
  return config


def _batch(size=8, seed=0):
  rng = np.random.default_rng(seed)
  clean = rng.random((size, 16, 16, 3), dtype=np.float32)
  rainy = np.clip(clean + 0.3 * (rng.random(clean.shape) > 0.9), 0, 1)
  return {'rainy': rainy.astype(np.float32), 'clean': clean}


def _one_step(config, batch, devices=4):
  mesh = parallel.make_mesh(jax.devices()[:devices])
  model = platforms.model_for(config.model, jax.devices())
  schedule = schedules.multistep_lr(1e-3, (100, 200))
  optimizer = optax.adam(schedule)
  host_state = jax.device_get(state_lib.create_train_state(
      model, optimizer, config.patch_size, jax.random.key(0),
      ema=config.ema_decay > 0))
  step = state_lib.make_train_step(model, optimizer, schedule, config, mesh)
  state, metrics = step(parallel.replicate(host_state, mesh),
                        parallel.shard_batch(batch, mesh))
  return host_state, jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize('accum', [2, 4])
def test_micro_batches_give_the_full_batch_loss_and_update(accum):
  batch = _batch()
  _, full, full_metrics = _one_step(_config(), batch, devices=2)
  _, micro, micro_metrics = _one_step(_config(grad_accum_steps=accum), batch,
                                      devices=2)
  for name in ('loss', 'ssim', 'l1', 'grad_norm'):
    np.testing.assert_allclose(micro_metrics[name], full_metrics[name],
                               rtol=2e-6, atol=1e-7, err_msg=name)
  for (path, a), b in zip(
      jax.tree_util.tree_flatten_with_path(micro['params'])[0],
      jax.tree.leaves(full['params'])):
    np.testing.assert_allclose(a, b, atol=2e-7,
                               err_msg=jax.tree_util.keystr(path))


def test_micro_batches_take_every_device_an_equal_share():
  batch = {'x': np.arange(16)}
  micros = np.asarray(state_lib.micro_batches(batch, 4)['x'])
  np.testing.assert_array_equal(micros[1], [1, 5, 9, 13])
  assert sorted(micros.ravel().tolist()) == list(range(16))


def test_the_moving_average_follows_each_update():
  decay = 0.9
  host, state, _ = _one_step(_config(ema_decay=decay), _batch())
  for initial, ema, params in zip(jax.tree.leaves(host['ema_params']),
                                  jax.tree.leaves(state['ema_params']),
                                  jax.tree.leaves(state['params'])):
    np.testing.assert_allclose(ema, decay * initial + (1 - decay) * params,
                               rtol=1e-6, atol=1e-7)
  assert any(np.any(e != p) for e, p in zip(
      jax.tree.leaves(state['ema_params']), jax.tree.leaves(state['params'])))


def test_no_ema_means_no_ema_params():
  _, state, _ = _one_step(_config(), _batch())
  assert 'ema_params' not in state


class _Source:
  def __len__(self):
    return 16

  def __getitem__(self, index):
    return {'height': 32, 'width': 32}


@pytest.mark.parametrize('fields,message', [
    ({'batch_size': 8, 'grad_accum_steps': 4},
     'not divisible by grad_accum_steps=4 x 4 devices = 16'),
    ({'batch_size': 12, 'grad_accum_steps': 2},
     'not divisible by grad_accum_steps=2 x 4 devices = 8'),
])
def test_a_batch_that_does_not_split_into_micro_batches_is_named(fields,
                                                                 message):
  config = _config(dataset='synthetic_rain', **fields)
  with pytest.raises(train_config.ConfigError, match=message):
    inputs.check_against_data(config, _Source(), _Source())


@pytest.mark.parametrize('fields,message', [
    ({'ema_decay': 1.0}, 'ema_decay=1.0 must lie in'),
    ({'ema_decay': -0.1}, 'ema_decay=-0.1 must lie in'),
    ({'grad_accum_steps': 0}, 'grad_accum_steps=0 must be a positive'),
])
def test_bad_values_are_named(fields, message):
  config = _config(dataset='synthetic_rain', **fields)
  with pytest.raises(train_config.ConfigError, match=message):
    train_config.validate(config)


def test_commands_use_the_moving_average_and_say_so(tmp_path,
                                                   synthetic_data_dir):
  config = smoke_config.smoke_config(synthetic_data_dir)
  config.ema_decay = 0.5
  result = trainer.train_and_evaluate(config, tmp_path / 'run')
  assert {'ema_psnr', 'ema_ssim'} <= set(result)
  assert checkpointing.weights_available(tmp_path / 'run') == ('raw', 'ema')
  raw, _ = checkpointing.load_pretrained(tmp_path / 'run', weights='raw')
  ema, _ = checkpointing.load_pretrained(tmp_path / 'run', weights='ema')
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(raw),
                                            jax.tree.leaves(ema)))
  assert checkpointing.choose_weights(tmp_path / 'run')[0] == 'ema'
  assert checkpointing.choose_weights(tmp_path / 'run', 'raw')[0] == 'raw'

  exported = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.export',
       f'--workdir={tmp_path / "run"}',
       f'--output={tmp_path / "ema.safetensors"}'],
      capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert exported.returncode == 0, exported.stderr[-2000:]
  assert 'weights: EMA' in exported.stdout

  config.ema_decay = 0.0
  trainer.train_and_evaluate(config, tmp_path / 'plain')
  used, note = checkpointing.choose_weights(tmp_path / 'plain')
  assert used == 'raw' and 'keeps no moving average' in note
