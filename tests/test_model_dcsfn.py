"""Specifies the DCSFN module: sizes, parameter layout, variants and config."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms

TORCH_TENSORS_OFFICIAL = 4118
TORCH_VALUES_OFFICIAL = 6_453_147
# GRU mode never uses fusion_{1,2}_2_2 nor conv_{xr,hz,hr,hn} of rec1_4 and
# rec2_1 (called with h=None): 4 + 16 tensors, 2*820 + 8*3620 values.
UNUSED_TENSORS, UNUSED_VALUES = 20, 30_600


# XLA's cheaper compile, for calls that compare two JAX programs compiled
# alike (as jax_disable_most_optimizations, scoped to those calls): the
# unrolled graphs compile several times faster.
FAST_COMPILE = {'xla_backend_optimization_level': 0,
                'xla_llvm_disable_expensive_passes': True}


def tiny(**overrides):
  config = models.preset('official')
  config.channels, config.num_blocks, config.convs_per_scale = 4, 2, 1
  config.update(overrides)
  return config


def _run(config, shape, seed=0):
  model = platforms.model_for(config, jax.devices())
  images = jax.random.uniform(jax.random.key(seed), shape)
  params = models.init_params(model, jax.random.key(1), images.shape)
  return model, params, images, jax.jit(model.apply)({'params': params}, images)


def test_init_params_matches_model_init_layout_and_distribution():
  model = platforms.model_for(tiny(num_scales=2), jax.devices())
  images = jnp.zeros((1, 8, 8, 3))
  # Shapes only: a real model.init of even a tiny DCSFN takes tens of seconds.
  reference = jax.eval_shape(model.init, jax.random.key(0), images)
  assert set(reference) == {'params'}, 'init must return parameters only'
  fast = models.init_params(model, jax.random.key(0), images.shape)
  assert jax.tree.structure(fast) == jax.tree.structure(reference['params'])
  for (path, value), ref in zip(jax.tree_util.tree_leaves_with_path(fast),
                                jax.tree.leaves(reference['params'])):
    assert value.shape == ref.shape and value.dtype == jnp.float32, path
  conv = fast['encoder_scale1']['conv1x1_1']
  bound = 1 / np.sqrt(3 * 4)
  for name in ('kernel', 'bias'):
    assert 0.5 * bound < np.abs(np.asarray(conv[name])).max() <= bound, name
  again = models.init_params(model, jax.random.key(0), images.shape)
  other = models.init_params(model, jax.random.key(1), images.shape)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, fast, again)))
  assert not np.array_equal(fast['convert']['kernel'], other['convert']['kernel'])


def _torch_names(path) -> str:
  """Flax parameter path -> released state_dict key (REFERENCE §2.5)."""
  names = [str(getattr(k, 'key', k)) for k in path]
  parts = []
  for name in names[:-1]:
    if name.startswith('block_'):
      parts += ['units', name[len('block_'):]]
    elif name.startswith('conv1x1_'):
      parts += ['conv1x1', name[len('conv1x1_'):], '0']
    elif '_conv_' in name and name.startswith('scale'):
      scale, index = name.split('_conv_')
      parts += [scale, index, '0']
    elif name.startswith('fusion') or name == 'convert':
      parts += [name, '0']
    elif name in ('merge_conv1x1', 'merge_conv3x3'):
      parts += ['merge', '0' if name == 'merge_conv1x1' else '2']
    else:
      parts.append(name)
  return '.'.join(parts + [{'kernel': 'weight', 'bias': 'bias'}[names[-1]]])


def _released_official_keys():
  keys = ['convert.0', 'merge.0', 'merge.2']
  for part in ('encoder', 'decoder'):
    for s in (1, 2, 4):
      for i in range(16):
        unit = f'{part}_scale{s}.units.{i}'
        keys += [f'{unit}.scale{k}.{j}.0' for k in (1, 2, 4, 8) for j in range(4)]
        keys += [f'{unit}.fusion{f}.0' for f in ('84', '42', '21', '_all')]
        keys.append(f'{part}_scale{s}.conv1x1.{i}.0')
  for p in (1, 2):
    for s in (1, 2, 4):
      keys += [f'rec{p}_{s}.conv_{g}' for g in ('xz', 'xr', 'xn', 'hz', 'hr', 'hn')]
    keys += [f'fusion_{p}_2_1.0', f'fusion_{p}_2_2.0']
  return {f'{k}.{leaf}' for k in keys for leaf in ('weight', 'bias')}


def test_encoder_of_official_preset_has_released_parameter_count(
    official_param_shapes):
  shapes = official_param_shapes['encoder_scale1']
  count = sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
  assert count == 1_053_120


def test_official_parameter_paths_map_onto_released_state_dict(
    official_param_shapes):
  shapes = official_param_shapes
  leaves = jax.tree_util.tree_leaves_with_path(shapes)
  flax_keys = {_torch_names(path) for path, _ in leaves}
  released = _released_official_keys()
  assert len(released) == TORCH_TENSORS_OFFICIAL
  assert len(flax_keys) == len(leaves), 'two Flax parameters map to one key'
  assert not flax_keys - released, f'no released key for {sorted(flax_keys - released)[:5]}'
  missing = sorted(released - flax_keys)
  assert len(missing) == UNUSED_TENSORS, missing
  assert all(k.startswith(('fusion_1_2_2', 'fusion_2_2_2', 'rec1_4.conv_h',
                           'rec2_1.conv_h', 'rec1_4.conv_xr', 'rec2_1.conv_xr'))
             for k in missing), missing
  values = sum(np.prod(leaf.shape) for _, leaf in leaves)
  assert values == TORCH_VALUES_OFFICIAL - UNUSED_VALUES
  kernel = shapes['encoder_scale1']['block_3']['fusion_all']['kernel']
  assert kernel.shape == (1, 1, 80, 20), 'kernels are HWIO'


@pytest.mark.parametrize('height,width', [(1, 1), (7, 300), (31, 31)])
def test_any_size_runs_and_keeps_its_shape(height, width):
  *_, derained = _run(tiny(), (1, height, width, 3))
  assert derained.shape == (1, height, width, 3)
  assert np.isfinite(np.asarray(derained)).all()


def test_small_input_is_padded_by_reflection_and_cropped_back():
  model, params, images, derained = _run(tiny(num_scales=2), (1, 5, 6, 3))
  padded = jnp.pad(images, ((0, 0), (0, 3), (0, 2), (0, 0)), mode='reflect')
  assert models.minimum_size(model) == 8
  native = model.apply({'params': params}, padded)[:, :5, :6]
  np.testing.assert_allclose(derained, native, atol=1e-6)


def test_bgr_order_flips_at_both_boundaries():
  model, params, images, derained_rgb = _run(tiny(num_scales=2), (2, 8, 12, 3))
  bgr_model = platforms.model_for(tiny(num_scales=2, channel_order='bgr'),
                                  jax.devices())
  derained_bgr = bgr_model.apply({'params': params}, images[..., ::-1])[..., ::-1]
  np.testing.assert_allclose(derained_bgr, derained_rgb, atol=1e-6)
  assert np.abs(np.asarray(derained_rgb - derained_bgr[..., ::-1])).max() > 1e-4, (
      'flipping the channels must change the output, else the test is vacuous')


def test_rain_estimate_is_input_minus_output_and_intermediates_are_sown():
  model, params, images, derained = _run(tiny(num_scales=2), (1, 8, 8, 3))
  rain = model.apply({'params': params}, images, method='rain_estimate')
  np.testing.assert_allclose(images - rain, derained, atol=1e-6)
  _, state = model.apply({'params': params}, images, mutable=['intermediates'])
  sown = state['intermediates']
  for name in ('converted', 'encoded_scale4', 'skip_features_scale1',
               'cross_pass1_scale2', 'cross_pass2_scale4', 'decoded_scale1',
               'rain_estimate'):
    assert name in sown, f'{name} not sown; got {sorted(sown)}'
  assert sown['skip_features_scale2'][0].shape == (2, 1, 4, 4, 4)


_VARIANTS = {
    'dense_off': dict(dense_connection=False),
    'skip_off': dict(skip_connection=False),
    'inner_scale_off': dict(inner_scale_connection=False),
    'one_scale': dict(num_scales=1),
    'three_scales_grouped': dict(num_scales=3, conv_groups=2),
    'cross_off': dict(cross_scale=False),
    'single': dict(single=True),
    'lstm': dict(recurrent_unit='LSTM'),
    'rnn': dict(recurrent_unit='RNN'),
    'conv_unit': dict(recurrent_unit='Conv'),
}

_ABSENT = {  # Parameters each ablation must not create.
    'dense_off': ['encoder_scale1/conv1x1_0'],
    'inner_scale_off': ['encoder_scale1/block_0/fusion21'],
    'one_scale': ['encoder_scale1/block_0/fusion_all',
                  'encoder_scale1/block_0/scale2_conv_0'],
    'cross_off': ['rec1_1', 'fusion_1_2_1'],
    'single': ['encoder_scale1', 'rec1_1'],
    'conv_unit': ['fusion_1_2_1', 'rec1_1/conv_xz'],
}
_PRESENT = {
    'single': ['encoder/block_1', 'decoder/conv1x1_1', 'merge_conv1x1'],
    'lstm': ['fusion_1_2_2', 'rec1_1/conv_hf', 'rec1_4/conv_xj'],
    'rnn': ['rec1_2/conv_h'],
    'conv_unit': ['rec2_4/conv'],
    'inner_scale_off': ['encoder_scale1/block_0/fusion_all'],
    'three_scales_grouped': ['decoder_scale4/block_1/fusion42'],
}


def _has(params, path):
  node = params
  for name in path.split('/'):
    if name not in node:
      return False
    node = node[name]
  return True


@pytest.mark.parametrize('variant', sorted(_VARIANTS))
def test_variant_builds_runs_and_has_its_parameters(variant):
  config = tiny(**{'num_scales': 2, **_VARIANTS[variant]})
  _, params, images, derained = _run(config, (1, 9, 10, 3))
  assert derained.shape == images.shape
  assert np.isfinite(np.asarray(derained)).all()
  for path in _ABSENT.get(variant, []):
    assert not _has(params, path), f'{variant} must not create {path}'
  for path in _PRESENT.get(variant, []):
    assert _has(params, path), f'{variant} must create {path}'


def test_grouped_conv_kernel_shape_in_paper_preset():
  config = models.preset('paper')
  config.num_blocks = 1
  shapes = jax.eval_shape(
      platforms.model_for(config, jax.devices()).init, jax.random.key(0),
      jnp.zeros((1, 16, 16, 3)))['params']['encoder_scale1']
  assert shapes['block_0']['scale4_conv_0']['kernel'].shape == (3, 3, 8, 32)
  assert 'scale4_conv_1' not in shapes['block_0']
  assert 'scale8_conv_0' not in shapes['block_0']


def test_presets_differ_as_documented():
  official, paper = models.preset('official'), models.preset('paper')
  assert (official.channels, official.num_scales, official.convs_per_scale,
          official.conv_groups) == (20, 4, 4, 1)
  assert (paper.channels, paper.num_scales, paper.convs_per_scale,
          paper.conv_groups) == (32, 3, 1, 4)
  assert set(official.keys()) == set(paper.keys())
  with pytest.raises(ValueError, match="'official', 'paper'"):
    models.preset('released')


@pytest.mark.parametrize('field,value,message', [
    ('recurrent_unit', 'gru', 'recurrent_unit'),
    ('num_scales', 5, 'num_scales'),
    ('num_scales', 0, 'num_scales'),
    ('channels', 30, 'conv_groups'),
    ('num_blocks', 2.0, 'num_blocks'),
    ('skip_connection', 1, 'skip_connection'),
    ('channel_order', 'BGR', 'channel_order'),
    ('dtype', 'float16', 'dtype'),
])
def test_invalid_config_is_rejected_naming_the_field(field, value, message):
  fields = models.preset('official').to_dict()
  fields['conv_groups'] = 4 if field == 'channels' else 1
  fields[field] = value  # A plain dict, e.g. read from JSON, skips type checks.
  config = ml_collections.ConfigDict(fields)
  with pytest.raises(ValueError, match=message):
    models.build_model(config)


def test_missing_or_unknown_fields_are_rejected():
  config = models.preset('official').to_dict()
  del config['dtype']
  with pytest.raises(ValueError, match='missing.*dtype'):
    models.build_model(ml_collections.ConfigDict(config))
  config = models.preset('official')
  config.unknown_switch = True
  with pytest.raises(ValueError, match='unknown.*unknown_switch'):
    models.build_model(config)


def test_float64_compute_without_jax_x64_is_refused_naming_the_switch():
  config = platforms.resolve_model_config(tiny(dtype='float64'), 'cpu')
  assert not jax.config.read('jax_enable_x64')
  with pytest.raises(ValueError, match='float64.*JAX_ENABLE_X64=1'):
    models.build_model(config)
  with jax.enable_x64(True):
    assert models.build_model(config).dtype == jnp.float64


def test_non_image_input_is_rejected():
  model = platforms.model_for(tiny(), jax.devices())
  with pytest.raises(ValueError, match=r'\[batch, height, width, 3\]'):
    model.init(jax.random.key(0), jnp.zeros((8, 8, 3)))


@pytest.mark.parametrize('variant', ['official_like', 'dense_off', 'single'])
def test_scanned_blocks_equal_unrolled_blocks_with_gradients(variant):
  overrides = {'official_like': {}, 'dense_off': dict(dense_connection=False),
               'single': dict(single=True)}[variant]
  unrolled = tiny(num_scales=2, num_blocks=3, scan_blocks=False, **overrides)
  scanned = tiny(num_scales=2, num_blocks=3, scan_blocks=True, **overrides)
  images = jax.random.uniform(jax.random.key(0), (2, 13, 11, 3))
  params = models.init_params(platforms.model_for(scanned, jax.devices()),
                              jax.random.key(1), images.shape)

  def value_and_grad(config):
    model = platforms.model_for(config, jax.devices())
    loss = lambda p: jnp.sum(model.apply({'params': p}, images) ** 2)
    with jax.default_matmul_precision('highest'):
      return jax.jit(jax.value_and_grad(loss)).lower(params).compile(
          FAST_COMPILE)(params)

  (loss_a, grads_a), (loss_b, grads_b) = map(value_and_grad,
                                             (scanned, unrolled))
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_b))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_a),
                          jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(a, b, atol=1e-6 * scale, err_msg=str(path))


@pytest.mark.parametrize('remat', [True, False])
def test_the_dense_scan_gradient_keeps_the_concatenation_once(remat):
  """dense_scan's VJP keeps F = [x, t_0, ..., t_{L-1}] at its end only, not
  at every step as autodiff of the scan would, and its forward pass under
  differentiation is the inference one."""
  config = tiny(num_scales=1, num_blocks=3, single=True, remat=remat)
  model = platforms.model_for(config, jax.devices())
  images = jax.random.uniform(jax.random.key(0), (2, 16, 12, 3))
  params = models.init_params(model, jax.random.key(1), images.shape)
  forward = lambda p: model.apply({'params': p}, images)
  residuals = jax.eval_shape(lambda p: jax.vjp(forward, p)[1], params)
  shapes = [leaf.shape for leaf in jax.tree.leaves(residuals)]
  concatenation = (2, 16, 12, 4 * 4)  # (L + 1) C channels, C = 4
  per_step = (3,) + concatenation
  assert shapes.count(concatenation) == 2, shapes  # encoder and decoder
  assert per_step not in shapes, shapes
  inferred = jax.jit(forward)(params)
  differentiated, _ = jax.jit(lambda p: jax.vjp(forward, p))(params)
  np.testing.assert_array_equal(inferred, differentiated)


def test_bfloat16_compute_keeps_float32_params_and_output_close():
  images = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
  model32 = platforms.model_for(tiny(num_scales=2), jax.devices())
  params = models.init_params(model32, jax.random.key(1), images.shape)
  model16 = platforms.model_for(tiny(num_scales=2, dtype='bfloat16'),
                                jax.devices())
  rain = lambda model: jax.jit(functools.partial(
      model.apply, method='rain_estimate'))({'params': params}, images)
  with jax.default_matmul_precision('highest'):
    rain32 = rain(model32)
  rain16 = rain(model16)
  assert rain16.dtype == jnp.float32
  difference = float(jnp.abs(rain16 - rain32).max())
  assert 0 < difference < 2e-2, difference  # > 0: bfloat16 really ran.
