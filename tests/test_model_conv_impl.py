"""Specifies the model config's conv_impl: 'xla' (XLA's convs, autodiff) and
'cpu' (dcsfn_jax.models.cpu_conv) compute the same model, forward, gradients
and an Adam step; 'xla' also matches the PyTorch twin (the 'cpu' path is what
tests/test_torch_parity.py runs on a CPU); 'auto' resolves per platform.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.models import cpu_conv

torch = pytest.importorskip('torch')
# The twin-parity harness, its tolerances (1e-5 max abs, 1e-4 of each
# tensor's max) and cheaper compiles; the fixture keeps torch on one thread.
from test_torch_parity import _assert_parity  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_torch_parity import _compare  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_torch_parity import _parity  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_torch_parity import _run_jitted  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_torch_parity import _single_torch_thread  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import


def _tiny(**overrides):
  config = models.preset('official')
  config.update(channels=4, num_blocks=2, num_scales=2, convs_per_scale=1)
  config.update(overrides)
  return config


def _train_step(config, params, images, targets):
  """(output, loss, grads, params after one optax.adam step) for `config`."""
  model = platforms.model_for(config, jax.devices())
  optimizer = optax.adam(1e-3)

  def loss_fn(p):
    derained = model.apply({'params': p}, images)
    return jnp.mean((derained - targets) ** 2), derained

  def step(p):
    (loss, derained), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
    updates, _ = optimizer.update(grads, optimizer.init(p), p)
    return derained, loss, grads, optax.apply_updates(p, updates)

  with jax.default_matmul_precision('highest'):
    return _run_jitted(step, params)


# (overrides, image shape), both at odd sizes (floored pools, non-integer
# resizes): the trainer's stacked layout with 8 channels, grouped convs and
# 2 x 49 x 47 images, over cpu_conv.WEIGHT_GRAD_TILE positions, so that the
# weight gradients are tiled; and unrolled blocks.
CASES = {
    'scanned_tiled_grouped': (dict(channels=8, conv_groups=2), (2, 49, 47, 3)),
    'unrolled': (dict(scan_blocks=False), (2, 13, 11, 3)),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_xla_and_cpu_convs_give_the_same_output_gradients_and_adam_step(name):
  overrides, shape = CASES[name]
  configs = {impl: _tiny(conv_impl=impl, **overrides) for impl in ('xla', 'cpu')}
  if 'tiled' in name:
    assert (shape[0] * shape[1] * shape[2] > cpu_conv.WEIGHT_GRAD_TILE
            and configs['cpu'].channels >= 8)
  rng = np.random.default_rng(0)
  images = rng.random(shape, dtype=np.float32)
  targets = rng.random(shape, dtype=np.float32)
  params = models.init_params(
      platforms.model_for(configs['cpu'], jax.devices()), jax.random.key(1),
      shape)
  params = models.runtime_layout(params, configs['cpu'])
  xla, cpu = (_train_step(configs[impl], params, images, targets)
              for impl in ('xla', 'cpu'))
  diffs = {'output': _compare(xla[0], cpu[0]), 'loss': _compare(xla[1], cpu[1])}
  for what, index in (('grad', 2), ('adam', 3)):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(xla[index]),
                            jax.tree.leaves(cpu[index])):
      diffs[f'{what}:{jax.tree_util.keystr(path)}'] = _compare(a, b)
  assert len(diffs) == 2 + 2 * len(jax.tree.leaves(params))
  grad_scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(cpu[2]))
  assert grad_scale > 1e-4, f'gradients vanish: max |grad| = {grad_scale}'
  _assert_parity(diffs)


# Unrolled blocks: 'xla' == 'cpu' above, and 'cpu' == twin in
# test_torch_parity.py.
@pytest.mark.parametrize('overrides', [
    {}, dict(recurrent_unit='LSTM', conv_groups=2)])
def test_xla_convs_match_the_torch_twin(overrides):
  _assert_parity(_parity(_tiny(conv_impl='xla', **overrides), 37, 45))


def _jaxpr(config):
  """The jaxpr of value_and_grad of a scalar loss of `config`'s model."""
  model = models.build_model(config)
  images = jnp.zeros((1, 8, 8, 3))
  params = models.init_params(model, jax.random.key(0), images.shape)
  loss = lambda p: jnp.sum(model.apply({'params': p}, images))
  return str(jax.make_jaxpr(jax.value_and_grad(loss))(params))


def test_auto_is_cpu_on_cpu_and_xla_on_other_platforms():
  assert platforms.platform_of(jax.devices()) == 'cpu'
  assert models.preset('official').conv_impl == 'auto'
  on_cpu = platforms.resolve_model_config(_tiny(), 'cpu')
  assert on_cpu.conv_impl == 'cpu'
  auto, cpu, xla = (
      _jaxpr(platforms.resolve_model_config(_tiny(conv_impl=impl), 'cpu'))
      for impl in ('auto', 'cpu', 'xla'))
  assert auto == cpu
  assert auto != xla, 'the two implementations must trace differently'
  on_gpu = platforms.resolve_model_config(_tiny(), 'gpu')
  assert on_gpu.conv_impl == 'xla'
  assert _jaxpr(on_gpu) == xla
  assert platforms.resolve_model_config(_tiny(conv_impl='cpu'),
                                        'gpu').conv_impl == 'cpu'


def test_invalid_conv_impl_is_rejected_naming_the_field():
  fields = _tiny().to_dict()
  fields['conv_impl'] = 'gpu'
  with pytest.raises(ValueError, match=r"conv_impl='gpu' must be one of"):
    models.build_model(ml_collections.ConfigDict(fields))


def test_config_saved_before_conv_impl_is_completed_with_auto():
  saved = models.preset('paper').to_dict()
  del saved['conv_impl']
  completed = models.complete(saved, 'old checkpoint')
  assert completed.conv_impl == 'auto'
  models.validate(completed)


def test_cpu_conv_rejects_strides_and_dilations():
  x, kernel = jnp.zeros((1, 8, 8, 4)), jnp.zeros((3, 3, 4, 4))
  pad = ((1, 1), (1, 1))
  with pytest.raises(ValueError, match='window_strides'):
    cpu_conv.conv_general_dilated(x, kernel, (2, 2), pad)
  with pytest.raises(ValueError, match='rhs_dilation'):
    cpu_conv.conv_general_dilated(x, kernel, (1, 1), pad, rhs_dilation=(2, 2))
