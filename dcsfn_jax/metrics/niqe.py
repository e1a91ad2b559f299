"""NIQE, the no-reference "naturalness" score (lower is better).

Mittal, Soundararajan and Bovik, "Making a 'Completely Blind' Image Quality
Analyzer", IEEE SPL 2013, following their MATLAB release step by step (and so
BasicSR's port of it): 96x96 blocks without overlap, local normalisation with
a 7x7 Gaussian (sigma 7/6) and replicated borders, 18 features per block at
each of two scales (the second made with MATLAB's antialiased bicubic
`imresize(., 0.5)`), and the Mahalanobis-like distance between the image's
feature Gaussian and the pristine model shipped in
dcsfn_jax/assets/niqe_pris_params.npz (see NIQE_PROVENANCE.md there).

Host-side numpy in float64, like MATLAB. Every reported NIQE figure should
name its `channel` and `crop_border`.
"""
import functools
import os

import numpy as np
from scipy import special

BLOCK_SIZE = 96
CHANNELS = ('y', 'gray')

_ASSET = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets',
                      'niqe_pris_params.npz')

# The shape parameters MATLAB searches: 0.2:0.001:10.
_SHAPES = 0.2 + 0.001 * np.arange(9801)
_AGGD_RATIOS = (special.gamma(2 / _SHAPES)**2
                / (special.gamma(1 / _SHAPES) * special.gamma(3 / _SHAPES)))

# Circular shifts (rows, columns) that pair each coefficient with a neighbour,
# in MATLAB's order: horizontal, vertical, and the two diagonals.
_PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))

# MATLAB rgb2gray's luma weights (the first row of inv of the NTSC matrix).
_GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121,
                          0.114020904255103])


@functools.cache
def pristine_model():
  """(mu [36], cov [36, 36], gaussian_window [7, 7]) of the pristine MVG."""
  with np.load(_ASSET) as model:
    return (model['mu_pris_param'].reshape(-1),
            model['cov_pris_param'],
            model['gaussian_window'])


def _cubic(distance):
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
  d = np.abs(distance)
  return np.where(
      d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1,
      np.where(d <= 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0))


def _resize_matrix(in_length, scale):
  """[out, in] weights of MATLAB's antialiased bicubic resize along one
  axis, out = ceil(scale * in), mirrored ('symmetric') borders."""
  out_length = int(np.ceil(scale * in_length))
  antialias = scale < 1
  width = 4.0 / scale if antialias else 4.0
  # Output pixel centres mapped into input coordinates, MATLAB 1-based.
  centres = np.arange(1, out_length + 1) / scale + 0.5 * (1 - 1 / scale)
  taps = int(np.ceil(width)) + 2
  first = np.floor(centres - width / 2)
  sources = first[:, None] + np.arange(taps)[None, :]
  offsets = centres[:, None] - sources
  weights = (scale * _cubic(scale * offsets) if antialias
             else _cubic(offsets))
  weights /= weights.sum(axis=1, keepdims=True)
  mirrored = np.concatenate([np.arange(in_length),
                             np.arange(in_length - 1, -1, -1)])
  sources = mirrored[np.mod(sources.astype(np.int64) - 1, 2 * in_length)]
  matrix = np.zeros((out_length, in_length))
  np.add.at(matrix, (np.repeat(np.arange(out_length), taps),
                     sources.reshape(-1)), weights.reshape(-1))
  return matrix


def imresize(plane, scale):
  """MATLAB `imresize(plane, scale)` (bicubic, antialiased when shrinking)
  of a float [H, W] plane -> [ceil(scale H), ceil(scale W)], float64."""
  plane = np.asarray(plane, np.float64)
  rows = _resize_matrix(plane.shape[0], scale)
  cols = _resize_matrix(plane.shape[1], scale)
  return rows @ plane @ cols.T


def _correlate_replicate(plane, window):
  """MATLAB imfilter(plane, window, 'replicate') for an odd square window."""
  half = window.shape[0] // 2
  padded = np.pad(plane, half, mode='edge')
  height, width = plane.shape
  result = np.zeros_like(plane)
  for dy in range(window.shape[0]):
    for dx in range(window.shape[1]):
      result += window[dy, dx] * padded[dy:dy + height, dx:dx + width]
  return result


def _normalise(plane, window):
  """Mean-subtracted contrast-normalised coefficients (I - mu) / (sigma + 1).

  The local moments are rounded to float32 and the variance is formed in
  float32, as BasicSR does: that reproduces the MATLAB figure for baboon.png
  (5.72957) to 1e-5, where float64 moments give 5.72996. NIQE is that
  sensitive because sqrt(E[I^2] - mu^2) cancels badly in smooth regions.
  """
  plane = plane.astype(np.float32)
  mu = _correlate_replicate(plane.astype(np.float64), window).astype(
      np.float32)
  second_moment = _correlate_replicate(
      np.square(plane).astype(np.float64), window).astype(np.float32)
  sigma = np.sqrt(np.abs(second_moment - np.square(mu)))
  return ((plane - mu) / (sigma + 1)).astype(np.float64)


def _blocks(plane, size):
  """[N, size, size] non-overlapping blocks of a plane whose sides are
  multiples of `size`."""
  rows, cols = plane.shape[0] // size, plane.shape[1] // size
  return (plane.reshape(rows, size, cols, size).transpose(0, 2, 1, 3)
          .reshape(rows * cols, size, size))


def _nan_mean(values, where):
  """Per-row mean of values[where]; NaN for rows with no such value."""
  count = where.sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(where, values, 0).sum(axis=1) / count


def _aggd_fit(samples):
  """Asymmetric generalised Gaussian fit per row of `samples` [N, M]:
  (shape, left scale, right scale), each [N]; MATLAB's estimateaggdparam."""
  left_std = np.sqrt(_nan_mean(samples**2, samples < 0))
  right_std = np.sqrt(_nan_mean(samples**2, samples > 0))
  with np.errstate(invalid='ignore', divide='ignore'):
    gamma_hat = left_std / right_std
    r_hat = (np.mean(np.abs(samples), axis=1)**2
             / np.mean(samples**2, axis=1))
    r_hat_norm = (r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1)
                  / (gamma_hat**2 + 1)**2)
  misfit = (_AGGD_RATIOS[None] - r_hat_norm[:, None])**2
  # MATLAB's min skips NaNs and returns index 1 when all are NaN.
  misfit = np.where(np.isnan(misfit), np.inf, misfit)
  shape = _SHAPES[np.argmin(misfit, axis=1)]
  to_scale = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
  return shape, left_std * to_scale, right_std * to_scale


def _block_features(blocks):
  """The 18 NIQE features of each normalised block, [N, 18]: the AGGD shape
  and mean scale of the coefficients, then for each neighbour pairing the
  AGGD shape, mean, left and right scales of the products (paper Eq. 8)."""
  flat = blocks.reshape(len(blocks), -1)
  shape, left, right = _aggd_fit(flat)
  features = [shape, (left + right) / 2]
  for shift in _PAIR_SHIFTS:
    products = flat * np.roll(blocks, shift, axis=(1, 2)).reshape(
        len(blocks), -1)
    shape, left, right = _aggd_fit(products)
    mean = ((right - left) * special.gamma(2 / shape)
            / special.gamma(1 / shape))
    features.extend([shape, mean, left, right])
  return np.stack(features, axis=1)


def _luma(image, channel):
  """The uint8-valued float64 plane NIQE scores, from RGB uint8 [H, W, 3]."""
  rgb = image.astype(np.float64)
  if channel == 'y':  # MATLAB rgb2ycbcr, rounded to uint8
    plane = 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1]
                  + 24.966 * rgb[..., 2]) / 255
  else:  # MATLAB rgb2gray, rounded to uint8
    plane = rgb @ _GRAY_WEIGHTS
  return np.floor(plane + 0.5)


def niqe_of_plane(plane):
  """NIQE of a float [H, W] plane on the 0..255 scale; H, W >= 96."""
  mu_pristine, cov_pristine, window = pristine_model()
  rows = plane.shape[0] // BLOCK_SIZE * BLOCK_SIZE
  cols = plane.shape[1] // BLOCK_SIZE * BLOCK_SIZE
  plane = np.asarray(plane, np.float64)[:rows, :cols]
  per_scale = []
  for scale in (1, 2):
    per_scale.append(
        _block_features(_blocks(_normalise(plane, window),
                                BLOCK_SIZE // scale)))
    if scale == 1:
      plane = imresize(plane, 0.5)
  features = np.concatenate(per_scale, axis=1)

  mu = np.nanmean(features, axis=0)
  complete = features[~np.isnan(features).any(axis=1)]
  # MATLAB's nancov of a single complete row is zero (cov of one sample).
  cov = (np.cov(complete, rowvar=False) if len(complete) > 1
         else np.zeros_like(cov_pristine))
  difference = mu_pristine - mu
  inverse = np.linalg.pinv((cov_pristine + cov) / 2)
  return float(np.sqrt(difference @ inverse @ difference))


def niqe(image, *, channel='y', crop_border=0):
  """NIQE of one image (lower is more natural).

  Args:
    image: uint8 [H, W, 3] RGB or [H, W] gray; float images in [0, 1] are
      first rounded to uint8 as a saved PNG would be.
    channel: 'y' (MATLAB Y of YCbCr, BasicSR's default) or 'gray' (MATLAB
      rgb2gray, the LIVE release's choice); ignored for 2-D input.
    crop_border: pixels dropped from every side first.

  Returns:
    float NIQE.
  """
  if channel not in CHANNELS:
    raise ValueError(f'NIQE channel must be one of {CHANNELS}, got '
                     f'{channel!r}.')
  image = np.asarray(image)
  if image.dtype.kind == 'f':
    image = np.floor(np.clip(image, 0, 1) * 255 + 0.5)
  elif image.dtype != np.uint8:
    raise ValueError(f'NIQE expects uint8 or float [0, 1] images, got '
                     f'{image.dtype}.')
  if image.ndim == 3 and image.shape[-1] == 3:
    plane = _luma(image, channel)
  elif image.ndim == 2:
    plane = image.astype(np.float64)
  else:
    raise ValueError(f'NIQE expects [H, W, 3] RGB or [H, W] gray, got shape '
                     f'{image.shape}.')
  if crop_border:
    plane = plane[crop_border:-crop_border, crop_border:-crop_border]
  if min(plane.shape) < BLOCK_SIZE:
    raise ValueError(
        f'NIQE needs at least {BLOCK_SIZE}x{BLOCK_SIZE} pixels after '
        f'crop_border={crop_border}, got {plane.shape[0]}x{plane.shape[1]}.')
  return niqe_of_plane(plane)
