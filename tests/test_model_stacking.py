"""Specifies the stacked parameter layout the trainer keeps (models.stacking)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms


def _tiny(**overrides):
  config = models.preset('official')
  config.update(channels=4, num_blocks=3, num_scales=2, convs_per_scale=1)
  config.update(overrides)
  return config


def _model_and_params(config, seed=0):
  model = platforms.model_for(config, jax.devices())
  return model, models.init_params(model, jax.random.key(seed), (1, 16, 16, 3))


def test_official_preset_stacks_4098_tensors_into_324(official_param_shapes):
  shapes = official_param_shapes
  stacked = jax.eval_shape(models.stack_blocks, shapes)
  assert len(jax.tree.leaves(shapes)) == 4098
  assert len(jax.tree.leaves(stacked)) == 324
  encoder = stacked['encoder_scale2']
  assert set(encoder) == {'blocks', 'dense_fusion'}
  assert encoder['blocks']['scale1_conv_0']['kernel'].shape == (16, 3, 3, 20,
                                                                20)
  fusion = {name: leaf.shape for name, leaf in encoder['dense_fusion'].items()}
  assert fusion == {'input_kernel': (20, 16, 20),
                    'step_kernel': (16, 20, 16, 20), 'bias': (16, 20)}


def test_dense_fusion_holds_each_conv1x1_where_the_scan_reads_it():
  _, params = _model_and_params(_tiny())
  fusion = models.stack_blocks(params)['decoder_scale2']['dense_fusion']
  for k in range(3):
    kernel = params['decoder_scale2'][f'conv1x1_{k}']['kernel'][0, 0]
    np.testing.assert_array_equal(fusion['input_kernel'][:, k], kernel[:4])
    for s in range(3):
      expected = kernel[4 * (s + 1):4 * (s + 2)] if s <= k else 0
      np.testing.assert_array_equal(fusion['step_kernel'][s, :, k], expected)
    np.testing.assert_array_equal(fusion['bias'][k],
                                  params['decoder_scale2'][f'conv1x1_{k}']['bias'])


def test_the_padding_zeros_of_the_dense_fusion_get_exactly_zero_gradient():
  model, params = _model_and_params(_tiny())
  images = jax.random.uniform(jax.random.key(3), (1, 16, 16, 3))
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(
      {'params': p}, images) ** 2)))(models.stack_blocks(params))
  step_grad = np.asarray(grads['encoder_scale1']['dense_fusion']['step_kernel'])
  for s in range(3):
    for k in range(3):
      used = np.abs(step_grad[s, :, k]).max()
      assert (used > 0) if s <= k else (used == 0), (s, k, used)


def test_stack_then_unstack_is_the_identity():
  _, params = _model_and_params(_tiny())
  stacked = models.stack_blocks(params)
  assert 'blocks' in stacked['decoder_scale4']
  back = models.unstack_blocks(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for ours, theirs in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(ours, theirs)
  np.testing.assert_array_equal(
      stacked['encoder_scale1']['blocks']['scale1_conv_0']['kernel'][2],
      params['encoder_scale1']['block_2']['scale1_conv_0']['kernel'])


def test_unstack_leaves_a_per_block_tree_as_it_is():
  _, params = _model_and_params(_tiny())
  assert jax.tree.structure(models.unstack_blocks(params)) == (
      jax.tree.structure(params))


def test_optimizer_moments_stack_and_unstack_with_the_params():
  _, params = _model_and_params(_tiny())
  opt_state = optax.adam(1e-3).init(models.stack_blocks(params))
  per_block = models.unstack_blocks(opt_state)
  assert jax.tree.structure(per_block[0].mu) == jax.tree.structure(params)
  restacked = models.stack_blocks(per_block)
  assert jax.tree.structure(restacked) == jax.tree.structure(opt_state)


@pytest.mark.parametrize('overrides', [{}, {'dense_connection': False},
                                       {'skip_connection': False},
                                       {'single': True}])
def test_the_model_gives_the_same_output_from_either_layout(overrides):
  model, params = _model_and_params(_tiny(**overrides))
  images = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3))
  apply = jax.jit(model.apply)
  np.testing.assert_array_equal(
      apply({'params': models.stack_blocks(params)}, images),
      apply({'params': params}, images))


def test_stacked_params_on_the_unrolled_model_are_a_clear_error():
  model, params = _model_and_params(_tiny(scan_blocks=False))
  with pytest.raises(ValueError, match='scan_blocks=True.*unstack_blocks'):
    model.apply({'params': models.stack_blocks(params)},
                jnp.zeros((1, 16, 16, 3)))


def test_blocks_that_cannot_be_stacked_are_a_clear_error():
  block = {'kernel': np.zeros((3, 3, 4, 4), np.float32)}
  with pytest.raises(ValueError, match=r'blocks numbered \[0, 2\]'):
    models.stack_blocks({'stack': {'block_0': block, 'block_2': block}})
  with pytest.raises(ValueError, match='different structure or shape'):
    models.stack_blocks({'stack': {
        'block_0': block, 'block_1': {'bias': np.zeros(4, np.float32)}}})
  fusion = {'kernel': np.zeros((1, 1, 8, 4), np.float32),
            'bias': np.zeros(4, np.float32)}
  with pytest.raises(ValueError, match='2 blocks has 1 fusion'):
    models.stack_blocks({'stack': {'block_0': block, 'block_1': block,
                                   'conv1x1_0': fusion}})
  with pytest.raises(ValueError, match=r'conv1x1_1 kernel .* needs \(12, 4\)'):
    models.stack_blocks({'stack': {'block_0': block, 'block_1': block,
                                   'conv1x1_0': fusion, 'conv1x1_1': fusion}})
