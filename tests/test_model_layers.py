"""Specifies the model's primitive layers against PyTorch's behaviour."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcsfn_jax.models import cpu_conv
from dcsfn_jax.models import layers

# Sizes met at test resolutions (481x321 floors to 240/160/120/80/60/40...),
# odd sizes, and up- and down-sizing by non-integer ratios.
_SPECIAL_PAIRS = [(321, 160), (481, 240), (80, 20), (160, 321), (240, 481),
                  (20, 80), (40, 481), (60, 321), (9, 37), (18, 37), (23, 93),
                  (16, 67), (120, 481), (1, 7), (7, 1), (300, 37), (37, 300)]


def _torch_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  # float32 like the model: torch's float64 kernel rounds a few pairs
  # differently (e.g. 64 -> 218).
  source = torch.arange(in_size, dtype=torch.float32).reshape(1, 1, 1, in_size)
  resized = F.interpolate(source, size=(1, out_size), mode='nearest')
  return resized.reshape(-1).numpy().astype(np.int64)


def test_legacy_nearest_indices_match_torch_interpolate():
  pairs = list(itertools.product(range(1, 41), range(1, 41))) + _SPECIAL_PAIRS
  pairs += [(n, m) for n in (64, 67, 93, 127, 255) for m in range(1, 260, 7)]
  assert len(pairs) > 1500
  mismatched = [(n, m) for n, m in pairs
                if not np.array_equal(layers.legacy_nearest_indices(n, m),
                                      _torch_nearest_indices(n, m))]
  assert not mismatched, f'index mismatch vs torch for (in, out) {mismatched[:10]}'


@pytest.mark.parametrize('in_hw,out_hw', [
    ((8, 12), (16, 24)),    # exact doubling (repeat path)
    ((8, 12), (32, 36)),    # x4 and x3 (repeat path)
    ((32, 36), (8, 12)),    # exact /4, /3 (strided path)
    ((9, 11), (37, 45)),    # non-integer up (gather path)
    ((37, 45), (18, 22)),   # non-integer down (gather path)
    ((5, 7), (5, 7)),       # identity
])
def test_resize_nearest_matches_torch_interpolate(in_hw, out_hw):
  images = np.random.RandomState(0).randn(2, *in_hw, 3).astype(np.float32)
  expected = F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2),
                           size=out_hw, mode='nearest').permute(0, 2, 3, 1)
  resized = layers.resize_nearest(jnp.asarray(images), *out_hw)
  np.testing.assert_array_equal(np.asarray(resized), expected.numpy())


def test_resize_fast_paths_emit_no_gather():
  repeat = jax.make_jaxpr(lambda x: layers.resize_nearest(x, 32, 48))(
      jnp.zeros((1, 8, 12, 3)))
  stride = jax.make_jaxpr(lambda x: layers.resize_nearest(x, 8, 12))(
      jnp.zeros((1, 32, 48, 3)))
  general = jax.make_jaxpr(lambda x: layers.resize_nearest(x, 37, 45))(
      jnp.zeros((1, 9, 11, 3)))
  assert 'gather' not in str(repeat) and 'gather' not in str(stride)
  assert 'gather' in str(general), 'the non-integer ratio must use the index table'


@pytest.mark.parametrize('factor', [2, 4, 8])
def test_max_pool_matches_torch_and_floors_odd_sizes(factor):
  images = np.random.RandomState(1).randn(2, 37, 45, 3).astype(np.float32)
  expected = F.max_pool2d(torch.from_numpy(images).permute(0, 3, 1, 2), factor,
                          factor).permute(0, 2, 3, 1).numpy()
  pooled = np.asarray(layers.max_pool(jnp.asarray(images), factor))
  assert pooled.shape == (2, 37 // factor, 45 // factor, 3)
  np.testing.assert_array_equal(pooled, expected)


def test_conv_init_follows_torch_default_bounds():
  conv = layers.conv(8, 3, in_features=20, name='probe', groups=4)
  variables = conv.init(jax.random.key(0), jnp.zeros((1, 4, 4, 20)))['params']
  bound = 1 / np.sqrt(20 // 4 * 9)
  assert variables['kernel'].shape == (3, 3, 5, 8)
  for name in ('kernel', 'bias'):
    values = np.asarray(variables[name])
    assert np.abs(values).max() <= bound, f'{name} exceeds U(+-1/sqrt(fan_in))'
    assert np.abs(values).max() > 0.5 * bound, f'{name} is not spread over the bound'


@pytest.mark.parametrize('kernel_size,groups,shape', [
    (3, 1, (2, 7, 9, 8)), (3, 4, (2, 7, 9, 8)), (1, 1, (2, 7, 9, 8)),
    # Over cpu_conv.WEIGHT_GRAD_TILE output positions: the weight gradient is
    # summed over row x image tiles, with a partial last tile of each.
    (3, 1, (5, 37, 23, 8)), (3, 4, (6, 64, 20, 8)), (5, 1, (3, 45, 40, 8))])
def test_cpu_conv_value_and_gradients_equal_lax_conv(kernel_size, groups,
                                                     shape):
  rng = np.random.RandomState(2)
  x = jnp.asarray(rng.randn(*shape).astype(np.float32))
  kernel = jnp.asarray(rng.randn(kernel_size, kernel_size, 8 // groups,
                                 12).astype(np.float32))
  pad = ((kernel_size // 2,) * 2,) * 2
  cotangent = jnp.asarray(rng.randn(*shape[:3], 12).astype(np.float32))

  def loss(conv_fn, x, kernel):
    y = conv_fn(x, kernel, (1, 1), pad, dimension_numbers=cpu_conv.NHWC,
                feature_group_count=groups)
    return jnp.sum(y * cotangent)

  with jax.default_matmul_precision('highest'):
    expected = jax.value_and_grad(
        functools.partial(loss, jax.lax.conv_general_dilated),
        argnums=(0, 1))(x, kernel)
    actual = jax.value_and_grad(
        functools.partial(loss, cpu_conv.conv_general_dilated),
        argnums=(0, 1))(x, kernel)
  for name, a, e in zip(('value', 'grad_x', 'grad_kernel'),
                        jax.tree.leaves(actual), jax.tree.leaves(expected)):
    scale = np.abs(e).max()
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * scale,
                               err_msg=name)


def test_large_weight_gradients_are_tiled():
  """The tiled path really runs: one conv per tile in the backward graph."""
  x = jnp.zeros((6, 64, 20, 8))
  kernel = jnp.zeros((3, 3, 8, 8))
  grad = jax.grad(lambda k: jnp.sum(cpu_conv.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)))))
  hlo = jax.jit(grad).lower(kernel).as_text()
  rows = cpu_conv.WEIGHT_GRAD_TILE // (20 * cpu_conv.WEIGHT_GRAD_TILE_IMAGES)
  tiles = -(-64 // rows) * -(-6 // cpu_conv.WEIGHT_GRAD_TILE_IMAGES)
  assert tiles > 1
  # Only the weight gradient is asked for: the other convs are pruned.
  assert hlo.count('convolution(') == tiles, hlo.count('convolution(')


@pytest.mark.parametrize('shape,factor', [((2, 9, 10, 3), 2),
                                          ((1, 17, 13, 4), 4),
                                          ((2, 16, 16, 2), 8)])
def test_max_pool_routes_tied_gradients_to_the_first_maximum_as_torch(
    shape, factor):
  rng = np.random.RandomState(4)
  images = rng.randint(0, 3, size=shape).astype(np.float32)  # many ties
  x = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_()
  pooled = F.max_pool2d(x, factor, factor)
  weights = torch.from_numpy(rng.randn(*pooled.shape).astype(np.float32))
  (pooled * weights).sum().backward()
  weights = jnp.asarray(weights.permute(0, 2, 3, 1).numpy())
  ours = layers.max_pool(jnp.asarray(images), factor)
  grad = jax.grad(lambda a: jnp.sum(layers.max_pool(a, factor) * weights))(
      jnp.asarray(images))
  np.testing.assert_array_equal(ours, pooled.detach().permute(0, 2, 3, 1))
  np.testing.assert_array_equal(grad, x.grad.permute(0, 2, 3, 1))


def test_max_pool_gradient_matches_torch_inside_scan():
  images = np.random.RandomState(3).randn(2, 9, 10, 3).astype(np.float32)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_()
  (F.max_pool2d(x, 2, 2) ** 2).sum().backward()
  expected = x.grad.permute(0, 2, 3, 1).numpy()

  def loss(stacked):  # Under lax.scan, where autodiff must still work.
    total, _ = jax.lax.scan(
        lambda acc, img: (acc + (layers.max_pool(img, 2) ** 2).sum(), None),
        0.0, stacked[:, None])
    return total

  np.testing.assert_allclose(jax.grad(loss)(jnp.asarray(images)), expected,
                             rtol=1e-6)
