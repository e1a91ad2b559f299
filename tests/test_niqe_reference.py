"""NIQE against a step-by-step float64 reference written here from the LIVE
MATLAB release's algorithm, a hand-derived MATLAB imresize value, and the
metric's invariants on scikit-image's photos."""
import numpy as np
import pytest
import skimage.data
from scipy import ndimage, special

from dcsfn_jax.metrics import niqe


def _cubic(x):
  x = abs(x)
  if x <= 1:
    return 1.5 * x**3 - 2.5 * x**2 + 1
  if x <= 2:
    return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
  return 0.0


def _reference_resize_rows(plane, scale):
  """MATLAB imresize along axis 0, one output row at a time (1-based indices
  as in MATLAB's `contributions`)."""
  n_in = plane.shape[0]
  n_out = int(np.ceil(n_in * scale))
  kernel_width = 4 / scale if scale < 1 else 4
  out = np.zeros((n_out,) + plane.shape[1:])
  for x in range(1, n_out + 1):
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = int(np.floor(u - kernel_width / 2))
    total = 0.0
    for k in range(int(np.ceil(kernel_width)) + 2):
      index = left + k
      weight = (scale * _cubic(scale * (u - index)) if scale < 1
                else _cubic(u - index))
      # Mirror out-of-range indices (MATLAB's 'symmetric' padding).
      period = np.mod(index - 1, 2 * n_in)
      source = period if period < n_in else 2 * n_in - 1 - period
      out[x - 1] += weight * plane[source]
      total += weight
    out[x - 1] /= total
  return out


def _reference_resize(plane, scale):
  return _reference_resize_rows(_reference_resize_rows(plane, scale).T,
                                scale).T


def _reference_aggd(values):
  """MATLAB estimateaggdparam: (alpha, left scale, right scale)."""
  shapes = np.arange(9801) * 0.001 + 0.2
  ratios = (special.gamma(2 / shapes)**2
            / (special.gamma(1 / shapes) * special.gamma(3 / shapes)))
  left = np.sqrt(np.mean(values[values < 0]**2))
  right = np.sqrt(np.mean(values[values > 0]**2))
  gamma_hat = left / right
  r_hat = np.mean(np.abs(values))**2 / np.mean(values**2)
  r_hat_norm = (r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1)
                / (gamma_hat**2 + 1)**2)
  alpha = shapes[np.argmin((ratios - r_hat_norm)**2)]
  factor = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
  return alpha, left * factor, right * factor


def _reference_features(block):
  """MATLAB computefeature: 18 numbers for one normalised block."""
  alpha, left, right = _reference_aggd(block.ravel())
  features = [alpha, (left + right) / 2]
  for shift in [(0, 1), (1, 0), (1, 1), (1, -1)]:
    pair = block.ravel() * np.roll(block, shift, axis=(0, 1)).ravel()
    alpha, left, right = _reference_aggd(pair)
    mean = (right - left) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    features += [alpha, mean, left, right]
  return features


def _reference_niqe(plane):
  """MATLAB computequality, looping over blocks. Local moments are float32
  (see dcsfn_jax.niqe._normalise for why)."""
  with np.load(niqe._ASSET) as model:
    mu_pristine = model['mu_pris_param'].ravel()
    cov_pristine = model['cov_pris_param']
  offsets = np.arange(7) - 3
  window = np.exp(-(offsets[:, None]**2 + offsets[None]**2)
                  / (2 * (7 / 6)**2))
  window /= window.sum()
  rows, cols = plane.shape[0] // 96, plane.shape[1] // 96
  image = plane[:rows * 96, :cols * 96].astype(np.float64)
  features = []
  for scale in (1, 2):
    image32 = image.astype(np.float32)
    mu = ndimage.correlate(image32, window, mode='nearest')
    second = ndimage.correlate(image32 * image32, window, mode='nearest')
    sigma = np.sqrt(np.abs(second - mu * mu))
    normalised = ((image32 - mu) / (sigma + 1)).astype(np.float64)
    size = 96 // scale
    features.append([
        _reference_features(normalised[r * size:(r + 1) * size,
                                       c * size:(c + 1) * size])
        for c in range(cols) for r in range(rows)])
    image = _reference_resize(image, 0.5)
  features = np.concatenate([np.array(f) for f in features], axis=1)
  mu = np.nanmean(features, axis=0)
  cov = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
  difference = mu_pristine - mu
  return np.sqrt(difference @ np.linalg.pinv((cov_pristine + cov) / 2)
                 @ difference)


def _matlab_y(rgb):
  rgb = rgb.astype(np.float64)
  return np.floor(16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1]
                        + 24.966 * rgb[..., 2]) / 255 + 0.5)


def test_imresize_by_half_matches_the_hand_derived_matlab_value():
  # imresize([1 2 3 4], 0.5): output 1 sits at u = 1.5 with taps
  # h(d) = cubic(d / 2) / 2 over d = 3.5 .. -3.5, mirrored at the border:
  # (-0.0234375*3 - 0.0703125*2 + 0.2265625*1 + 0.8671875*(1 + 2)
  #  + 0.2265625*3 - 0.0703125*4 - 0.0234375*4) / 2 = 1.4609375.
  row = niqe.imresize(np.array([[1., 2., 3., 4.]]), 0.5)
  np.testing.assert_allclose(row, [[1.4609375, 3.5390625]], atol=1e-12)


@pytest.mark.parametrize('shape', [(96, 96), (97, 50), (13, 7)])
def test_imresize_matches_the_per_sample_reference(shape):
  plane = np.random.default_rng(sum(shape)).uniform(0, 255, shape)
  expected = _reference_resize(plane, 0.5)
  got = niqe.imresize(plane, 0.5)
  assert got.shape == (int(np.ceil(shape[0] / 2)), int(np.ceil(shape[1] / 2)))
  np.testing.assert_allclose(got, expected, atol=1e-9)


@pytest.mark.parametrize('photo', ['camera', 'coffee', 'chelsea'])
def test_niqe_matches_the_step_by_step_reference_on_scikit_image_photos(
    photo):
  image = getattr(skimage.data, photo)()
  plane = _matlab_y(image) if image.ndim == 3 else image.astype(np.float64)
  expected = _reference_niqe(plane)
  got = niqe.niqe(image, channel='y')
  assert abs(got - expected) < 1e-6, (got, expected)


def test_pristine_model_is_the_shipped_36_feature_gaussian():
  mu, cov, window = niqe.pristine_model()
  assert mu.shape == (36,) and cov.shape == (36, 36) and window.shape == (7, 7)
  np.testing.assert_allclose(cov, cov.T)
  np.testing.assert_allclose(window.sum(), 1.0, atol=1e-12)


@pytest.mark.parametrize('photo', ['astronaut', 'coffee'])
def test_niqe_rises_with_blur_and_with_noise(photo):
  image = getattr(skimage.data, photo)()[:288, :384]
  rng = np.random.default_rng(0)
  blurred = [niqe.niqe(image)]
  # From sigma 2 on: a sigma-1 blur can *lower* NIQE on a photo with sensor
  # noise or JPEG artefacts (coffee goes 5.80 -> 5.55) by smoothing them away.
  for sigma in (2.0, 3.0, 4.0):
    smooth = ndimage.gaussian_filter(image.astype(np.float64),
                                     (sigma, sigma, 0))
    blurred.append(niqe.niqe(np.clip(np.round(smooth), 0, 255)
                             .astype(np.uint8)))
  assert np.all(np.diff(blurred) > 0), f'NIQE under blur: {blurred}'
  noisy = [niqe.niqe(image)]
  for level in (10.0, 20.0, 40.0):
    corrupted = image + rng.normal(0, level, image.shape)
    noisy.append(niqe.niqe(np.clip(np.round(corrupted), 0, 255)
                           .astype(np.uint8)))
  assert np.all(np.diff(noisy) > 0), f'NIQE under noise: {noisy}'


def test_channel_crop_border_and_float_input():
  image = skimage.data.coffee()[:300, :400]
  assert niqe.niqe(image, channel='gray') != niqe.niqe(image, channel='y')
  np.testing.assert_allclose(niqe.niqe(image, crop_border=8),
                             niqe.niqe(image[8:-8, 8:-8]))
  np.testing.assert_allclose(niqe.niqe(image.astype(np.float32) / 255),
                             niqe.niqe(image))
  gray = _matlab_y(image).astype(np.uint8)
  np.testing.assert_allclose(niqe.niqe(gray), niqe.niqe(image, channel='y'))


def test_bad_inputs_are_rejected_with_the_reason():
  with pytest.raises(ValueError, match='96x96'):
    niqe.niqe(np.zeros((120, 90, 3), np.uint8))
  with pytest.raises(ValueError, match='crop_border=20'):
    niqe.niqe(np.zeros((120, 200, 3), np.uint8), crop_border=20)
  with pytest.raises(ValueError, match='channel'):
    niqe.niqe(np.zeros((120, 200, 3), np.uint8), channel='luma')
  with pytest.raises(ValueError, match='uint16'):
    niqe.niqe(np.zeros((120, 200, 3), np.uint16))
