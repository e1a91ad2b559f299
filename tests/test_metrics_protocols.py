"""Golden values for PSNR/SSIM under the 'official' and 'y_uint8' protocols.

The expected numbers come from closed forms or from a float64 numpy reference
written here from the protocol definitions (REFERENCE §4), independently of
dcsfn_jax.metrics (plain 2-D windows instead of separable convolutions, float
MATLAB luma instead of integer arithmetic).
"""
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from dcsfn_jax import metrics


def _reference_window():
  offsets = np.arange(11) - 5.0
  taps = np.exp(-offsets**2 / (2 * 1.5**2))
  window = np.outer(taps, taps)
  return window / window.sum()


def _reference_ssim(a, b, data_range, padding):
  """Mean SSIM of two float64 [H, W] planes (Wang et al. 2004)."""
  if padding == 'same':
    a = np.pad(a, 5)
    b = np.pad(b, 5)
  window = _reference_window()

  def blur(plane):
    return np.einsum('ijkl,kl->ij', sliding_window_view(plane, (11, 11)),
                     window)

  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = (0.01 * data_range)**2, (0.03 * data_range)**2
  ssim_map = (((2 * mu_a * mu_b + c1) * (2 * cov + c2))
              / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
  return ssim_map.mean()


def _reference_official(derained, clean):
  """The released eval.py's PSNR and mean SSIM of one [H, W, 3] image."""
  derained = derained.astype(np.float64)
  clean = clean.astype(np.float64)
  mse = np.mean((np.clip(derained, 0, 1) - np.clip(clean, 0, 1))**2)
  psnr = 100.0 if mse == 0 else 20 * np.log10(1.0 / np.sqrt(mse))
  ssim = np.mean([_reference_ssim(derained[..., c], clean[..., c], 1.0,
                                  'same') for c in range(3)])
  return psnr, ssim


def _reference_matlab_y(rgb01):
  """MATLAB: im2uint8 then rgb2ycbcr's Y, as float64 [H, W]."""
  rgb = np.floor(np.clip(rgb01.astype(np.float64), 0, 1) * 255 + 0.5)
  luma = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1]
               + 24.966 * rgb[..., 2]) / 255
  return np.floor(luma + 0.5)


def _reference_y_uint8(derained, clean):
  y_derained = _reference_matlab_y(derained)
  y_clean = _reference_matlab_y(clean)
  rmse = np.sqrt(np.mean((y_derained - y_clean)**2))
  psnr = np.inf if rmse == 0 else 20 * np.log10(255.0 / rmse)
  return psnr, _reference_ssim(y_derained, y_clean, 255.0, 'valid')


def _metrics(derained, clean, sizes=None, protocols=metrics.PROTOCOLS):
  fn = jax.jit(lambda d, c, s: metrics.image_metrics(d, c, s,
                                                     protocols=protocols))
  result = fn(jnp.asarray(derained, jnp.float32),
              jnp.asarray(clean, jnp.float32),
              None if sizes is None else jnp.asarray(sizes, jnp.int32))
  return {name: np.asarray(value) for name, value in result.items()}


def _smooth_image(rng, height, width, low=0.1, high=0.8):
  """A photo-like image: smooth colour gradients plus mild texture, on the
  uint8 grid so clean images are exactly representable."""
  yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width),
                       indexing='ij')
  base = np.stack([np.sin(3 * xx + 1) * np.cos(2 * yy),
                   np.cos(4 * yy - xx), np.sin(2 * (xx + yy))], axis=-1)
  image = 0.5 + 0.35 * base + 0.05 * rng.standard_normal((height, width, 3))
  image = low + (high - low) * (image - image.min()) / np.ptp(image)
  return np.round(image * 255) / 255


def test_official_psnr_of_a_constant_offset_is_exact():
  clean = np.random.default_rng(0).integers(32, 200, (2, 40, 36, 3)) / 256
  derained = clean + 1 / 64  # every error exactly 1/64 in float32
  result = _metrics(derained, clean, protocols=['official'])
  np.testing.assert_allclose(result['official/psnr'], 20 * np.log10(64),
                             atol=1e-4)


def test_y_uint8_psnr_of_a_gray_offset_is_exact():
  # Gray +85 levels raises MATLAB's Y by exactly 219 * 85 / 255 = 73 levels.
  gray = np.random.default_rng(1).integers(0, 171, (1, 40, 44, 1))
  clean = np.repeat(gray, 3, axis=-1) / 255
  derained = np.repeat(gray + 85, 3, axis=-1) / 255
  result = _metrics(derained, clean, protocols=['y_uint8'])
  np.testing.assert_allclose(result['y_uint8/psnr'], 20 * np.log10(255 / 73),
                             atol=1e-4)


def test_identical_images_score_perfectly_under_both_protocols():
  clean = _smooth_image(np.random.default_rng(2), 33, 47)[None]
  result = _metrics(clean, clean)
  assert result['official/psnr'][0] == metrics.OFFICIAL_PSNR_OF_IDENTICAL
  assert np.isinf(result['y_uint8/psnr'][0])
  np.testing.assert_allclose(result['official/ssim'], 1.0, atol=1e-6)
  np.testing.assert_allclose(result['y_uint8/ssim'], 1.0, atol=1e-6)


def test_white_streaks_score_1_32_db_higher_on_y_than_on_rgb():
  """White streaks raise R, G and B equally, so Y moves by 219/255 of that:
  the Y PSNR exceeds the RGB one by 20 log10(255/219) = 1.3226 dB (before
  uint8 rounding of Y, which moves it by a few hundredths)."""
  rng = np.random.default_rng(3)
  clean = _smooth_image(rng, 48, 64)
  streaks = np.zeros((48, 64), bool)
  for column in rng.choice(64, 12, replace=False):
    streaks[rng.integers(0, 20):rng.integers(28, 48), column] = True
  rainy = clean + 40 / 255 * streaks[..., None]
  result = _metrics(rainy[None], clean[None])

  gap = result['y_uint8/psnr'][0] - result['official/psnr'][0]
  assert abs(gap - 20 * np.log10(255 / 219)) < 0.05, gap
  reference_rgb, _ = _reference_official(rainy, clean)
  reference_y, _ = _reference_y_uint8(rainy, clean)
  np.testing.assert_allclose(result['official/psnr'][0], reference_rgb,
                             atol=1e-4)
  np.testing.assert_allclose(result['y_uint8/psnr'][0], reference_y,
                             atol=1e-4)


def test_y_uint8_rounds_the_output_like_a_saved_png_instead_of_truncating():
  gray = np.random.default_rng(4).integers(0, 250, (1, 36, 36, 1))
  clean = np.repeat(gray, 3, axis=-1) / 255
  just_below_half = _metrics((clean * 255 + 0.49) / 255, clean,
                             protocols=['y_uint8'])
  assert np.isinf(just_below_half['y_uint8/psnr'][0]), (
      'an output 0.49 levels above the truth rounds to the truth')

  above_half = (clean * 255 + 0.6) / 255
  result = _metrics(above_half, clean, protocols=['y_uint8'])
  reference_psnr, reference_ssim = _reference_y_uint8(above_half[0], clean[0])
  np.testing.assert_allclose(result['y_uint8/psnr'][0], reference_psnr,
                             atol=1e-4)
  np.testing.assert_allclose(result['y_uint8/ssim'][0], reference_ssim,
                             atol=1e-5)
  # Truncation (np.uint8(x * 255)) would have scored this output as perfect.
  assert np.isfinite(result['y_uint8/psnr'][0])


def test_to_uint8_rounds_half_up_and_saturates():
  levels = np.array([-0.2, 0.0, 0.49, 0.5, 0.51, 254.5, 255.0, 300.0]) / 255
  np.testing.assert_array_equal(
      np.asarray(metrics.to_uint8(jnp.asarray(levels, jnp.float32))),
      [0, 0, 0, 1, 1, 255, 255, 255])


def test_matlab_luma_matches_the_float_formula_on_all_gray_and_primaries():
  values = np.arange(256)
  triples = np.concatenate([
      np.stack([values] * 3, -1),
      np.stack([values, 0 * values, 0 * values], -1),
      np.stack([0 * values, values, 0 * values], -1),
      np.stack([0 * values, 0 * values, values], -1),
      np.random.default_rng(5).integers(0, 256, (4096, 3)),
  ])
  expected = _reference_matlab_y(triples / 255)
  got = np.asarray(metrics.rgb_to_y_uint8(jnp.asarray(triples)))
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('height,width', [(48, 48), (37, 53)])
def test_both_protocols_match_the_float64_reference(height, width):
  rng = np.random.default_rng(height * width)
  clean = _smooth_image(rng, height, width)
  # An unclamped model output: noisy, partly outside [0, 1].
  derained = clean + 0.08 * rng.standard_normal(clean.shape)
  derained[:4, :4] = 1.3
  result = _metrics(derained[None], clean[None])

  psnr, ssim = _reference_official(derained, clean)
  np.testing.assert_allclose(result['official/psnr'][0], psnr, atol=1e-4)
  np.testing.assert_allclose(result['official/ssim'][0], ssim, atol=1e-5)
  psnr, ssim = _reference_y_uint8(derained, clean)
  np.testing.assert_allclose(result['y_uint8/psnr'][0], psnr, atol=1e-4)
  np.testing.assert_allclose(result['y_uint8/ssim'][0], ssim, atol=1e-5)


def test_padded_images_with_sizes_score_as_their_unpadded_selves():
  rng = np.random.default_rng(6)
  shapes = [(40, 52), (33, 33), (48, 64)]
  cleans = [_smooth_image(rng, h, w) for h, w in shapes]
  derained = [c + 0.05 * rng.standard_normal(c.shape) for c in cleans]
  padded_clean = np.full((3, 48, 64, 3), 0.7)
  padded_derained = np.full((3, 48, 64, 3), -5.0)  # garbage in the padding
  for i, (h, w) in enumerate(shapes):
    padded_clean[i, :h, :w] = cleans[i]
    padded_derained[i, :h, :w] = derained[i]
  batched = _metrics(padded_derained, padded_clean, sizes=shapes)
  for i in range(3):
    alone = _metrics(derained[i][None], cleans[i][None])
    for name, value in alone.items():
      np.testing.assert_allclose(batched[name][i], value[0], atol=2e-5,
                                 err_msg=f'{name} of image {i} {shapes[i]}')


def test_training_ssim_is_dm_pix_ssim_with_zero_padding_filter():
  rng = np.random.default_rng(7)
  a = jnp.asarray(rng.uniform(size=(2, 24, 30, 3)), jnp.float32)
  b = jnp.asarray(np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1),
                  jnp.float32)
  np.testing.assert_allclose(metrics.ssim(a, b, padding='valid'),
                             dm_pix.ssim(a, b), atol=1e-6)
  expected = [np.mean([_reference_ssim(np.asarray(a[i, ..., c], np.float64),
                                       np.asarray(b[i, ..., c], np.float64),
                                       1.0, 'same') for c in range(3)])
              for i in range(2)]
  np.testing.assert_allclose(metrics.ssim(a, b, padding='same'), expected,
                             atol=1e-6)


def test_training_ssim_has_finite_gradients_on_flat_patches():
  flat = jnp.full((1, 16, 16, 3), 0.5)
  grad = jax.grad(lambda x: metrics.ssim(x, flat).mean())(flat + 0.01)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_metric_sums_count_only_the_masked_in_images():
  per_image = {'official/psnr': jnp.asarray([30.0, 40.0, 100.0, 7.0])}
  sums = metrics.metric_sums(per_image, jnp.asarray([True, True, False,
                                                     False]))
  assert float(sums['official/psnr']) == 70.0
  assert float(sums['count']) == 2.0


def test_unknown_protocol_is_rejected_with_the_choices():
  with pytest.raises(ValueError, match="'official', 'y_uint8'"):
    metrics.image_metrics(jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3)),
                          protocols=['rgb'])
