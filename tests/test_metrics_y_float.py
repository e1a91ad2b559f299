"""The 'y_float' protocol: DRSformer/RCDNet statistic.m on saved uint8 PNGs.

Golden values: GNU Octave 7.3.0 with octave-image 2.14.0, made by
tests/golden/make_y_float_golden.py (images: tests/golden/y_float_cases.py,
Octave script: tests/golden/y_float_golden.m). Octave gives im2double,
rgb2ycbcr on doubles and psnr independently of this project; its image
package has no ssim, so the golden SSIM is MATLAB's documented algorithm
restated with Octave's own fspecial and imfilter(..., 'replicate'), and a
float64 scipy reference (ndimage.correlate, mode='nearest') written here
checks it again on larger images.
"""
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from dcsfn_jax import metrics

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / 'golden'))
import y_float_cases  # pylint: disable=wrong-import-position

# Octave 7.3.0, image 2.14.0 (python tests/golden/make_y_float_golden.py).
GOLDEN = {'texture_37x53': {'mean_y_derained': 0.4783084104042677,
                            'mean_y_clean': 0.4823761808083464,
                            'y_derained_first': 0.3450892272202999,
                            'y_derained_last': 0.5457710265282585,
                            'psnr': 29.853218147545988,
                            'ssim': 0.9470071744991546},
          'flat_regions_48x64': {'mean_y_derained': 0.5370504188743581,
                                 'mean_y_clean': 0.5258638444348421,
                                 'y_derained_first': 0.9215686274509806,
                                 'y_derained_last': 0.38943483275663204,
                                 'psnr': 22.397196426650737,
                                 'ssim': 0.9518149990041015},
          'small_9x12': {'mean_y_derained': 0.4911123661839464,
                         'mean_y_clean': 0.49212705027980697,
                         'y_derained_first': 0.4157518800461361,
                         'y_derained_last': 0.6116444752018454,
                         'psnr': 29.114987551773368,
                         'ssim': 0.9221812741558606},
          'strip_5x16': {'mean_y_derained': 0.5215322900807383,
                         'mean_y_clean': 0.5228003598615919,
                         'y_derained_first': 0.37231898500576704,
                         'y_derained_last': 0.40301434832756633,
                         'psnr': 22.637271180651744,
                         'ssim': 0.7054733518900169}}


def _reference_y(rgb_uint8):
  """float64 MATLAB rgb2ycbcr(im2double(x))(:, :, 1), [H, W]."""
  rgb = rgb_uint8.astype(np.float64) / 255.0
  return (16 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1]
          + 24.966 * rgb[..., 2]) / 255


def _reference_ssim(a, b):
  """float64 MATLAB ssim(a, b) for doubles, as documented: 11x11 Gaussian
  sigma 1.5, replicate padding, C1 = 0.01^2, C2 = 0.03^2, map mean."""
  offsets = np.arange(11) - 5.0
  window = np.exp(-(offsets[:, None]**2 + offsets[None, :]**2) / (2 * 1.5**2))
  window /= window.sum()

  def blur(plane):
    return ndimage.correlate(plane, window, mode='nearest')

  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = 0.01**2, 0.03**2
  return np.mean(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                 / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))


def _reference(derained, clean):
  """(psnr, ssim) of statistic.m in float64."""
  y_derained, y_clean = _reference_y(derained), _reference_y(clean)
  psnr = 10 * np.log10(1.0 / np.mean((y_derained - y_clean)**2))
  return psnr, _reference_ssim(255 * y_derained, 255 * y_clean)


_y_float = jax.jit(metrics.y_float_metrics)


def _ours(derained, clean, sizes=None):
  """y_float_metrics on uint8 [B, H, W, 3] (or [H, W, 3]) as [B] arrays."""
  derained, clean = np.asarray(derained), np.asarray(clean)
  if derained.ndim == 3:
    derained, clean = derained[None], clean[None]
  result = _y_float(metrics.to_float(jnp.asarray(derained)),
                    metrics.to_float(jnp.asarray(clean)),
                    None if sizes is None else jnp.asarray(sizes, jnp.int32))
  return {name: np.asarray(value) for name, value in result.items()}


@pytest.mark.parametrize('name', sorted(GOLDEN))
def test_luma_is_octave_rgb2ycbcr_of_im2double(name):
  derained, clean = y_float_cases.pair(name)
  golden = GOLDEN[name]
  reference = _reference_y(derained)
  assert abs(reference.mean() - golden['mean_y_derained']) < 1e-13
  assert abs(_reference_y(clean).mean() - golden['mean_y_clean']) < 1e-13
  assert abs(reference[0, 0] - golden['y_derained_first']) < 1e-13
  assert abs(reference[-1, -1] - golden['y_derained_last']) < 1e-13
  ours = np.asarray(metrics.rgb_to_y_float(jnp.asarray(derained)))
  np.testing.assert_allclose(ours, reference, atol=1e-6)
  assert abs(ours.mean() - golden['mean_y_derained']) < 1e-6


@pytest.mark.parametrize('name', sorted(GOLDEN))
def test_psnr_and_ssim_match_octave(name):
  derained, clean = y_float_cases.pair(name)
  result = _ours(derained, clean)
  np.testing.assert_allclose(result['psnr'][0], GOLDEN[name]['psnr'],
                             atol=1e-4)
  np.testing.assert_allclose(result['ssim'][0], GOLDEN[name]['ssim'],
                             atol=2e-6)


@pytest.mark.parametrize('name', sorted(GOLDEN))
def test_float64_reference_is_octave_imfilter_replicate(name):
  """The scipy reference (mode='nearest') and Octave's imfilter
  'replicate' agree, so the reference can stand in on larger images."""
  psnr, ssim = _reference(*y_float_cases.pair(name))
  assert abs(psnr - GOLDEN[name]['psnr']) < 1e-9
  assert abs(ssim - GOLDEN[name]['ssim']) < 1e-12


def _scene(height, width, seed):
  """A clean photo-like uint8 image with saturated and flat areas, and a
  derained version with noise and a few flat patches of its own."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width),
                       indexing='ij')
  base = np.stack([np.sin(5 * xx + 1) * np.cos(3 * yy), np.cos(4 * yy - xx),
                   np.sin(3 * (xx + yy))], axis=-1)
  clean = np.clip(128 + 90 * base + rng.normal(0, 6, base.shape), 0, 255)
  clean[: height // 3, : width // 3] = 255
  clean[-height // 4:, -width // 4:] = 61
  derained = np.clip(clean + rng.normal(0, 4, clean.shape), 0, 255)
  derained[: height // 6, : width // 6] = 255
  derained[-height // 4:, -width // 4:] = 61
  derained[height // 2: height // 2 + 5, :7] = 3
  return np.round(derained).astype(np.uint8), np.round(clean).astype(
      np.uint8)


@pytest.mark.parametrize('height,width', [(96, 128), (61, 45)])
def test_matches_the_float64_reference_with_flat_areas(height, width):
  derained, clean = _scene(height, width, height)
  psnr, ssim = _reference(derained, clean)
  result = _ours(derained, clean)
  np.testing.assert_allclose(result['psnr'][0], psnr, atol=1e-4)
  np.testing.assert_allclose(result['ssim'][0], ssim, atol=2e-6)


def test_padded_batch_replicates_each_real_border_not_the_padding():
  shapes = [(40, 52), (23, 61), (48, 64), (9, 12)]
  scenes = [_scene(h, w, i) for i, (h, w) in enumerate(shapes)]
  derained = np.full((4, 48, 64, 3), 255, np.uint8)  # garbage padding
  clean = np.zeros((4, 48, 64, 3), np.uint8)
  for i, ((h, w), (d, c)) in enumerate(zip(shapes, scenes)):
    derained[i, :h, :w] = d
    clean[i, :h, :w] = c
  batched = _ours(derained, clean, sizes=shapes)
  for i, (d, c) in enumerate(scenes):
    alone = _ours(d, c)
    for name, atol in (('psnr', 1e-5), ('ssim', 1e-6)):
      np.testing.assert_allclose(batched[name][i], alone[name][0], atol=atol,
                                 err_msg=f'{name} of image {i} {shapes[i]}')
    psnr, ssim = _reference(d, c)
    np.testing.assert_allclose(batched['psnr'][i], psnr, atol=1e-4)
    np.testing.assert_allclose(batched['ssim'][i], ssim, atol=2e-6)


def test_replicate_pad_repeats_the_real_border():
  plane = jnp.arange(12, dtype=jnp.float32).reshape(1, 3, 4)
  plane = plane.at[0, 2, :].set(-1).at[0, :, 3].set(-1)  # batch padding
  padded = np.asarray(metrics.replicate_pad(plane, jnp.asarray([[2, 3]]), 2))
  real = np.asarray(plane)[0, :2, :3]
  np.testing.assert_array_equal(padded[0, :6, :7],
                                np.pad(real, 2, mode='edge'))


def test_dynamic_range_one_makes_a_one_level_speck_cost_its_windows():
  """DynamicRange defaults to 1 for doubles while statistic.m passes 255 Y:
  C1, C2 are then negligible, so one pixel one level off all but zeroes the
  SSIM of the ~57 windows that weigh it above ~C2 / 0.86^2; with L = 255
  constants it would hardly register."""
  clean = np.full((40, 40, 3), 120, np.uint8)
  derained = clean.copy()
  derained[20, 20] += 1
  ssim = _ours(derained, clean)['ssim'][0]
  assert ssim < 1 - 45 / 1600, ssim
  np.testing.assert_allclose(ssim, _reference(derained, clean)[1], atol=2e-6)

  def luma(image):
    return 255 * metrics.rgb_to_y_float(jnp.asarray(image))[None]

  with_l255 = metrics.matlab_ssim_map(luma(derained), luma(clean),
                                      c1=(0.01 * 255)**2, c2=(0.03 * 255)**2)
  assert float(jnp.mean(with_l255)) > 0.9999


def test_identical_images_and_unrounded_outputs():
  derained, clean = _scene(30, 40, 7)
  result = _ours(clean, clean)
  assert np.isinf(result['psnr'][0])
  np.testing.assert_allclose(result['ssim'][0], 1.0, atol=1e-6)
  # A float output is scored as the PNG it rounds to (half up, clipped).
  float_output = (derained.astype(np.float32) + 0.49) / 255
  float_output[:3, :3] = 1.7
  rounded = derained.copy()
  rounded[:3, :3] = 255
  direct = jax.jit(metrics.y_float_metrics)(jnp.asarray(float_output[None]),
                                            metrics.to_float(clean[None]))
  saved = _ours(rounded, clean)
  for name in ('psnr', 'ssim'):
    np.testing.assert_allclose(np.asarray(direct[name])[0], saved[name][0],
                               atol=1e-6)


def test_y_float_is_a_named_protocol():
  assert 'y_float' in metrics.PROTOCOLS
  description = metrics.PROTOCOL_DESCRIPTIONS['y_float']
  for word in ('statistic.m', 'replicate', 'Octave', 'C1=1e-4'):
    assert word in description
  result = metrics.image_metrics(jnp.zeros((1, 16, 16, 3)),
                                 jnp.zeros((1, 16, 16, 3)),
                                 protocols=['y_float'])
  assert set(result) == {'y_float/psnr', 'y_float/ssim'}
