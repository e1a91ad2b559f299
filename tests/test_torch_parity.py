"""Flax DCSFN == the independent PyTorch twin, forward and backward.

Both run the same random weights (the twin's PyTorch initialisation, with
non-zero biases, converted by `from_torch_state_dict`). Per case we compare
the derained output, the rain estimate R (sown and through
`method='rain_estimate'`), every sown intermediate feature, the -SSIM loss,
and its gradient with respect to every parameter (torch parameters our model
never uses must get no gradient). Everything must agree to 1e-5 max abs under
`jax.default_matmul_precision('highest')`.

Forward parity alone is weak: at random initialisation the output hardly
depends on the deep layers, hence R, features and gradients.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcsfn_jax.export import from_torch_state_dict
from dcsfn_jax.export import to_torch_state_dict
from dcsfn_jax.models import build_model
from dcsfn_jax.models import preset

torch = pytest.importorskip('torch')
from dcsfn_jax.export.torch_twin import build_torch_model  # pylint: disable=g-import-not-at-top

TOLERANCE = 1e-5
# Every variant runs at 37 x 45; these add the other sizes for a few.
MORE_SIZES = ((67, 93), (32, 32))
# XLA's cheaper compile (as jax_disable_most_optimizations, scoped to these
# calls): these graphs compile about twice as fast and are checked against
# the same tolerance.
FAST_COMPILE = {'xla_backend_optimization_level': 0,
                'xla_llvm_disable_expensive_passes': True}


@pytest.fixture(autouse=True, scope='module')
def _single_torch_thread():
  # The twin's convs are tiny: torch's thread pool only adds contention with
  # XLA (measured 40 ms per 4-channel conv with the default pool under load).
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _run_jitted(fn, *args):
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def _tiny(**overrides):
  """A fast stand-in for the official preset: 4 channels, 2 blocks."""
  config = preset('official')
  config.update(channels=4, num_blocks=2, convs_per_scale=2)
  config.update(overrides)
  return config


def _tiny_paper(**overrides):
  config = preset('paper')
  config.update(channels=8, num_blocks=2)
  config.update(overrides)
  return config


def _gaussian_window() -> np.ndarray:
  """The released SSIM window: normalised 11x11 Gaussian, sigma 1.5."""
  g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
  g /= g.sum()
  return np.outer(g, g).astype(np.float32)


def _ssim_map(blur, a, b):
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  return ((2 * mu_a * mu_b + c1) * (2 * cov + c2) /
          ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))


def _ssim_jax(a, b):
  """SSIM of NHWC images, zero-padded 'same' depthwise Gaussian, mean."""
  window = jnp.asarray(np.tile(_gaussian_window()[:, :, None, None],
                               (1, 1, 1, 3)))
  blur = functools.partial(
      jax.lax.conv_general_dilated, rhs=window, window_strides=(1, 1),
      padding=((5, 5), (5, 5)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=3)
  return jnp.mean(_ssim_map(lambda x: blur(x), a, b))


def _ssim_torch(a, b):
  """SSIM of NCHW images, as `_ssim_jax`."""
  window = torch.from_numpy(_gaussian_window())[None, None].repeat(3, 1, 1, 1)
  blur = lambda x: torch.nn.functional.conv2d(x, window, padding=5, groups=3)
  return _ssim_map(blur, a, b).mean()


def _max_abs(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) -
                             np.asarray(b, np.float64))))


def _parity(config, height, width, batch=2, seed=0,
            check_method=False) -> dict:
  """Max abs Flax-vs-twin differences, keyed by what was compared.

  check_method also compares `model.apply(..., method='rain_estimate')` (RGB)
  with the twin's R; otherwise R is compared as sown, in network order.
  """
  torch.manual_seed(seed)
  twin = build_torch_model(config)
  params = from_torch_state_dict(twin.state_dict(), config)
  model = build_model(config)
  rng = np.random.default_rng(seed)
  rainy = rng.random((batch, height, width, 3), dtype=np.float32)
  clean = rng.random((batch, height, width, 3), dtype=np.float32)

  def loss_fn(p):
    derained, state = model.apply({'params': p}, rainy,
                                  mutable=['intermediates'])
    return -_ssim_jax(derained, clean), (derained, state['intermediates'])

  with jax.default_matmul_precision('highest'):
    (loss, (derained, features)), grads = _run_jitted(
        jax.value_and_grad(loss_fn, has_aux=True), params)
    if check_method:
      rain_rgb = _run_jitted(
          functools.partial(model.apply, method='rain_estimate'),
          {'params': params}, rainy)

  bgr = config.channel_order == 'bgr'
  to_twin = lambda x: torch.from_numpy(
      np.ascontiguousarray(x.transpose(0, 3, 1, 2)[:, ::-1 if bgr else 1]))
  from_twin = lambda t: np.moveaxis(t.detach().numpy(), -3, -1)
  twin_derained, twin_features = twin(to_twin(rainy),
                                      return_intermediates=True)
  twin_loss = -_ssim_torch(twin_derained, to_twin(clean))
  twin_loss.backward()

  flip = (lambda x: x[..., ::-1]) if bgr else (lambda x: x)
  diffs = {
      'output': _max_abs(derained, flip(from_twin(twin_derained))),
      'loss': abs(float(loss) - twin_loss.item()),
  }
  if check_method:
    diffs['rain_estimate_method'] = _max_abs(
        rain_rgb, flip(from_twin(twin_features['rain_estimate'])))
  assert set(features) <= set(twin_features), (
      f'Flax sows features the twin lacks: '
      f'{sorted(set(features) - set(twin_features))}')
  assert 'rain_estimate' in features and 'converted' in features
  for name, (value,) in features.items():
    diffs[f'feature:{name}'] = _max_abs(value, from_twin(twin_features[name]))

  flax_grads = to_torch_state_dict(grads, config)  # counts every leaf
  twin_grads = {name: (p.grad.numpy() if p.grad is not None
                       else np.zeros(p.shape, np.float32))
                for name, p in twin.named_parameters()}
  assert flax_grads.keys() == twin_grads.keys()
  diffs['grad'] = max(_max_abs(flax_grads[k], twin_grads[k])
                      for k in twin_grads)
  diffs['grad_scale'] = max(float(np.abs(g).max())
                            for g in twin_grads.values())
  return diffs


def _assert_parity(diffs):
  worst = {k: v for k, v in diffs.items()
           if k != 'grad_scale' and not v <= TOLERANCE}
  assert not worst, (f'Flax and the PyTorch twin differ by more than '
                     f'{TOLERANCE}: {worst}')
  # A gradient that vanished everywhere would compare equal trivially.
  assert diffs['grad_scale'] > 1e-4, diffs


VARIANTS = {
    'gru': _tiny(),
    'lstm': _tiny(recurrent_unit='LSTM'),
    'rnn': _tiny(recurrent_unit='RNN'),
    'conv_unit': _tiny(recurrent_unit='Conv'),
    'scales1': _tiny(num_scales=1),
    'scales2': _tiny(num_scales=2),
    'scales3': _tiny(num_scales=3),
    'single': _tiny(single=True),
    'no_cross_scale': _tiny(cross_scale=False),
    'no_skip': _tiny(skip_connection=False),
    'no_dense': _tiny(dense_connection=False),
    'no_inner_scale': _tiny(inner_scale_connection=False),
    'paper': _tiny_paper(),
    'bgr': _tiny(channel_order='bgr'),
    'unrolled_blocks': _tiny(scan_blocks=False),
}


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_variant_matches_twin_at_odd_size(name):
  _assert_parity(_parity(VARIANTS[name], 37, 45,
                         check_method=name in ('bgr', 'single')))


@pytest.mark.parametrize('height, width', MORE_SIZES)
@pytest.mark.parametrize('name', ['gru', 'lstm', 'paper'])
def test_matches_twin_across_sizes(name, height, width):
  _assert_parity(_parity(VARIANTS[name], height, width))


@pytest.mark.slow
def test_official_preset_matches_twin():
  _assert_parity(_parity(preset('official'), 32, 32, batch=1))


@pytest.mark.slow
def test_paper_preset_matches_twin():
  _assert_parity(_parity(preset('paper'), 37, 45, batch=1))


def _pad_like_the_model(images, size):
  """Bottom/right pad NCHW to `size`: reflect if the pad is shorter than the
  side, else edge; rows first, then columns."""
  for axis in (2, 3):
    pad = size - images.shape[axis]
    if pad > 0:
      widths = (0, 0, 0, pad) if axis == 2 else (0, pad, 0, 0)
      mode = 'reflect' if pad < images.shape[axis] else 'replicate'
      images = torch.nn.functional.pad(images, widths, mode=mode)
  return images


@pytest.mark.parametrize('height, width', [(20, 27), (7, 40), (1, 1)])
def test_small_inputs_equal_the_twin_on_padded_then_cropped_input(height,
                                                                  width):
  config = _tiny()  # runs natively from 32 x 32
  torch.manual_seed(0)
  twin = build_torch_model(config)
  params = from_torch_state_dict(twin.state_dict(), config)
  rainy = np.random.default_rng(0).random((1, height, width, 3),
                                          dtype=np.float32)
  with jax.default_matmul_precision('highest'):
    derained = build_model(config).apply({'params': params}, rainy)
  padded = _pad_like_the_model(
      torch.from_numpy(np.ascontiguousarray(rainy.transpose(0, 3, 1, 2))), 32)
  with torch.no_grad():
    expected = twin(padded)[:, :, :height, :width].numpy().transpose(0, 2, 3, 1)
  assert derained.shape == rainy.shape
  assert _max_abs(derained, expected) <= TOLERANCE
