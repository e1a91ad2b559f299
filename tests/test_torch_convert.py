"""Flax <-> torch weight conversion counts every tensor and round-trips exactly."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcsfn_jax.pytorch import from_torch_state_dict
from dcsfn_jax.pytorch import to_torch_state_dict
from dcsfn_jax.pytorch import torch_state_dict_shapes
from dcsfn_jax.models import preset
from dcsfn_jax.platforms import model_for

torch = pytest.importorskip('torch')
from dcsfn_jax.pytorch.torch_twin import build_torch_model  # pylint: disable=g-import-not-at-top

VARIANTS = {
    'gru': {},
    'lstm': dict(recurrent_unit='LSTM'),
    'rnn': dict(recurrent_unit='RNN'),
    'conv_unit': dict(recurrent_unit='Conv'),
    'scales1': dict(num_scales=1),
    'scales2': dict(num_scales=2),
    'scales3': dict(num_scales=3),
    'single': dict(single=True),
    'no_cross_scale': dict(cross_scale=False),
    'no_skip': dict(skip_connection=False),
    'no_dense': dict(dense_connection=False),
    'no_inner_scale': dict(inner_scale_connection=False),
    'grouped': dict(conv_groups=2),
}


def _tiny(**overrides):
  config = preset('official')
  config.update(channels=4, num_blocks=2, convs_per_scale=2)
  config.update(overrides)
  return config


def _abstract_params(config):
  model = model_for(config, jax.devices())
  return jax.eval_shape(model.init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))['params']


def _random_params(config, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: rng.standard_normal(s.shape).astype(np.float32),
      _abstract_params(config))


def _flat(tree):
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_converter_fills_exactly_the_flax_model_params(name):
  config = _tiny(**VARIANTS[name])
  torch.manual_seed(0)
  twin = build_torch_model(config)
  converted = _flat(from_torch_state_dict(twin.state_dict(), config))
  expected = _flat(_abstract_params(config))
  assert sorted(set(expected) - set(converted)) == []
  assert sorted(set(converted) - set(expected)) == []
  assert {k: v.shape for k, v in converted.items()} == {
      k: tuple(v.shape) for k, v in expected.items()}


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_params_round_trip_through_torch_exactly(name):
  config = _tiny(**VARIANTS[name])
  params = _random_params(config)
  state_dict = to_torch_state_dict(params, config)
  twin = build_torch_model(config)
  twin.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()},
                       strict=True)
  back = from_torch_state_dict(twin.state_dict(), config)
  original, returned = _flat(params), _flat(back)
  assert original.keys() == returned.keys()
  for key in original:
    np.testing.assert_array_equal(returned[key], original[key], err_msg=key)


@pytest.fixture(scope='module')
def official_state_dict():
  """Random official params (the Flax model's own tree), exported."""
  config = preset('official')
  return to_torch_state_dict(_random_params(config), config)


def test_official_export_has_released_tensor_and_value_counts(
    official_state_dict):
  config = preset('official')
  state_dict = official_state_dict
  assert len(state_dict) == 4118
  assert sum(v.size for v in state_dict.values()) == 6_453_147
  assert all(v.dtype == np.float32 for v in state_dict.values())
  assert {k: v.shape for k, v in state_dict.items()} == (
      torch_state_dict_shapes(config))


def test_tensors_the_model_never_uses_are_zero_filled_and_counted(
    official_state_dict):
  state_dict = official_state_dict
  zero = sorted(k for k, v in state_dict.items() if not v.any())
  expected = sorted(
      [f'fusion_{p}_2_2.0.{leaf}' for p in (1, 2) for leaf in ('weight', 'bias')]
      + [f'{cell}.conv_{gate}.{leaf}' for cell in ('rec1_4', 'rec2_1')
         for gate in ('xr', 'hz', 'hr', 'hn') for leaf in ('weight', 'bias')])
  assert zero == expected
  assert sum(state_dict[k].size for k in zero) == 30_600


def test_import_accepts_released_checkpoint_wrapping_and_ignores_unused():
  config = _tiny()
  torch.manual_seed(1)
  twin = build_torch_model(config)
  plain = from_torch_state_dict(twin.state_dict(), config)
  released = {'net': {f'module.{k}': v for k, v in twin.state_dict().items()},
              'clock_net': 7, 'opt_net': {'state': {}}}
  wrapped = from_torch_state_dict(released, config)
  as_numpy = from_torch_state_dict(
      {k: v.numpy() for k, v in twin.state_dict().items()}, config)
  for other in (wrapped, as_numpy):
    jax.tree.map(np.testing.assert_array_equal, other, plain)
  # rec1_4.conv_hz is random (non-zero) here, yet never read: it is dropped.
  assert twin.state_dict()['rec1_4.conv_hz.weight'].abs().sum() > 0
  assert 'conv_hz' not in plain['rec1_4']


def _state_dict(config):
  torch.manual_seed(0)
  return dict(build_torch_model(config).state_dict())


def test_import_lists_missing_unexpected_and_misshapen_tensors():
  config = _tiny()
  state_dict = _state_dict(config)
  del state_dict['merge.2.bias']
  state_dict['merge.3.weight'] = torch.zeros(3)
  state_dict['convert.0.weight'] = torch.zeros(4, 3, 5, 5)
  with pytest.raises(ValueError) as error:
    from_torch_state_dict(state_dict, config)
  message = str(error.value)
  assert '1 missing: merge.2.bias' in message
  assert '1 unexpected: merge.3.weight' in message
  assert 'convert.0.weight (4, 3, 5, 5) (expected (4, 3, 3, 3))' in message


def test_import_rejects_weights_of_another_config():
  with pytest.raises(ValueError, match=r'missing: .*fusion84'):
    from_torch_state_dict(_state_dict(_tiny(num_scales=3)), _tiny())


def test_import_rejects_integer_tensors_and_non_mappings():
  config = _tiny()
  state_dict = _state_dict(config)
  state_dict['merge.2.bias'] = torch.zeros(3, dtype=torch.int64)
  with pytest.raises(ValueError, match=r'merge\.2\.bias non-float torch\.int64'):
    from_torch_state_dict(state_dict, config)
  with pytest.raises(ValueError, match='got list'):
    from_torch_state_dict([1, 2], config)


def test_export_lists_missing_unexpected_and_misshapen_params():
  config = _tiny()
  params = _random_params(config)
  del params['merge_conv3x3']['bias']
  params['extra_conv'] = {'kernel': np.zeros((1, 1, 3, 3), np.float32)}
  params['convert']['kernel'] = np.zeros((5, 5, 3, 4), np.float32)
  with pytest.raises(ValueError) as error:
    to_torch_state_dict(params, config)
  message = str(error.value)
  assert '1 missing: merge_conv3x3/bias' in message
  assert '1 unexpected: extra_conv/kernel' in message
  assert 'convert/kernel (5, 5, 3, 4) (expected (3, 3, 3, 4))' in message


def test_export_unwraps_a_variables_dict():
  config = _tiny()
  params = _random_params(config)
  a = to_torch_state_dict(params, config)
  b = to_torch_state_dict({'params': params}, config)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_package_and_converters_import_without_torch():
  code = ('import sys, dcsfn_jax, dcsfn_jax.models, dcsfn_jax.export, '
          'dcsfn_jax.pytorch.convert; '
          'assert "torch" not in sys.modules, "torch was imported"')
  subprocess.run([sys.executable, '-c', code], check=True)
