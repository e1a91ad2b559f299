"""config.model.remat: the same step either way, and 'auto' chosen by the
step's activation memory (training.memory)."""
import functools
import types

import jax
import numpy as np
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.training import config as train_config
from dcsfn_jax.training import memory
from dcsfn_jax.training import state as state_lib
import cli_checks

pytestmark = pytest.mark.usefixtures('fast_compiles')


def _config(remat='auto', batch_size=8):
  config = train_config.base_config()
  config.model.update(channels=4, num_blocks=3, num_scales=2,
                      convs_per_scale=2)
  config.model = models.replaced(config.model, remat=remat)
  config.batch_size, config.patch_size = batch_size, 16
  return config


def _grads(config):
  model = platforms.model_for(config.model, jax.devices())
  params = models.runtime_layout(
      models.init_params(model, jax.random.key(0), (1, 16, 16, 3)),
      config.model)
  rng = np.random.default_rng(0)
  batch = {name: rng.random((4, 16, 16, 3), dtype=np.float32)
           for name in ('rainy', 'clean')}
  loss = functools.partial(state_lib.loss_fn, model=model, config=config)
  return jax.jit(jax.value_and_grad(loss, has_aux=True))(params, batch)


def test_remat_on_and_off_give_the_same_loss_and_gradients():
  (loss_on, _), grads_on = _grads(_config(remat=True))
  (loss_off, _), grads_off = _grads(_config(remat=False))
  assert float(loss_on) == float(loss_off)
  for (path, on), off in zip(jax.tree_util.tree_flatten_with_path(grads_on)[0],
                             jax.tree.leaves(grads_off)):
    np.testing.assert_allclose(on, off, rtol=1e-6, atol=1e-9,
                               err_msg=jax.tree_util.keystr(path))
  assert max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads_on)) > 0


def test_remat_keeps_fewer_activations_and_both_scale_with_batch():
  off = memory.activation_bytes(_config(remat=False), 4, 'cpu')
  on = memory.activation_bytes(_config(remat=True), 4, 'cpu')
  assert off > 1.5 * on > 0
  assert memory.activation_bytes(_config(remat=False), 8,
                                 'cpu') == pytest.approx(2 * off, rel=0.02)


def _accelerators(count):
  """Stand-ins for `count` GPUs: resolve_remat reads only their platform."""
  return [types.SimpleNamespace(platform='gpu', id=i) for i in range(count)]


def test_auto_on_accelerators_keeps_activations_within_the_budget():
  needed = memory.activation_bytes(_config(remat=False), 4, 'gpu')  # 8 / 2
  roomy, tight = _config(batch_size=8), _config(batch_size=8)
  roomy.remat_budget_gb = 1.01 * needed / 1e9
  tight.remat_budget_gb = 0.99 * needed / 1e9
  chosen, message = memory.resolve_remat(roomy, _accelerators(2))
  assert chosen.remat is False and 'no remat' in message
  assert f'{needed / 1e9:.2f} GB per device' in message
  chosen, message = memory.resolve_remat(tight, _accelerators(2))
  assert chosen.remat is True and 'rematerialising' in message
  # Accumulation shrinks what one device holds at a time.
  tight.grad_accum_steps = 2
  assert memory.resolve_remat(tight, _accelerators(2))[0].remat is False
  # The official step of the speed benchmark fits the default budget on a
  # GPU (about 4.0 GB for 16 patches of 64^2).
  official = train_config.base_config()
  official.batch_size = 16
  assert memory.resolve_remat(official, _accelerators(1))[0].remat is False


def test_the_tpu_estimate_counts_the_tiled_layout():
  # 20 channels take 128 lanes, 5 rows of bfloat16 take 16.
  assert memory._tpu_tiled_bytes((2, 64, 64, 20), 4) == 2 * 64 * 64 * 128 * 4  # pylint: disable=protected-access
  assert memory._tpu_tiled_bytes((5, 20), 2) == 16 * 128 * 2  # pylint: disable=protected-access
  # The tiny model's 4 channels pad 32-fold wherever they are minor.
  assert (memory.activation_bytes(_config(remat=False), 4, 'tpu')
          > 10 * memory.activation_bytes(_config(remat=False), 4, 'gpu'))


def _tpus(count):
  return [types.SimpleNamespace(platform='tpu', id=i) for i in range(count)]


def test_auto_on_tpus_follows_what_the_compiler_allocated():
  """Compiled for v5e (benchmarks/RESULTS.md), the official step kept
  15.9 GB of temporaries at 16 patches per chip without remat (of 16 GiB),
  1.4 GB at 2 per chip: 'auto' rematerialises the first, not the second."""
  official = train_config.base_config()
  official.batch_size = 16
  v5e = 16 * 2**30
  assert memory.resolve_remat(official, _tpus(1), v5e)[0].remat is True
  assert memory.resolve_remat(official, _tpus(8), v5e)[0].remat is False


def test_the_budget_is_at_most_half_the_device_memory():
  config = _config(batch_size=8)
  needed = memory.activation_bytes(_config(remat=False), 4, 'gpu')
  config.remat_budget_gb = 1e6
  chosen, message = memory.resolve_remat(config, _accelerators(2),
                                         memory_bytes=2.01 * needed)
  assert chosen.remat is False and "half the device's" in message
  chosen, message = memory.resolve_remat(config, _accelerators(2),
                                         memory_bytes=1.99 * needed)
  assert chosen.remat is True and "half the device's" in message


def test_auto_on_a_cpu_host_rematerialises_whatever_the_budget():
  config = _config()
  config.remat_budget_gb = 1e6
  chosen, message = memory.resolve_remat(config, jax.devices()[:2])
  assert chosen.remat is True and 'on CPU' in message


@pytest.mark.parametrize('remat', [True, False])
def test_an_explicit_choice_is_kept(remat):
  config = _config(remat=remat)
  config.remat_budget_gb = 1e-9
  for devices in (jax.devices(), _accelerators(1)):
    chosen, message = memory.resolve_remat(config, devices)
    assert chosen.remat is remat and 'as configured' in message


def test_the_official_blocks_keep_about_five_times_more_without_remat():
  """2.0 against 0.39 GB for 8 patches of 64^2."""
  config = train_config.base_config()
  recomputed = memory.activation_bytes(config, 8, 'cpu')  # 'auto' = True
  config.model = models.replaced(config.model, remat=False)
  assert memory.activation_bytes(config, 8, 'cpu') > 4 * recomputed


@pytest.mark.parametrize('override,expected', [
    ('--config.model.remat=sometimes',
     "remat='sometimes' must be one of ('auto', True, False)"),
    ('--config.remat_budget_gb=0',
     'remat_budget_gb=0.0 must be a positive number of gigabytes'),
])
def test_bad_remat_settings_are_one_line_errors(tmp_path, override, expected):
  result = cli_checks.run(tmp_path, 'dcsfn_jax.train',
                          '--config=configs/demo.py:smoke',
                          f'--workdir={tmp_path / "run"}', override)
  assert result.returncode != 0
  assert expected in cli_checks.error_line(result)
  assert not (tmp_path / 'run').exists()
