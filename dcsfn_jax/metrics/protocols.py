"""PSNR and SSIM under three named evaluation protocols (REFERENCE §4).

Deraining papers disagree by more than a decibel on the same outputs because
they measure differently, so every figure this project prints names one of:

  'official'  the released eval.py: PSNR over the three channels of the float
              output clipped to [0, 1] (no rounding), 100 when the MSE is 0;
              SSIM is the training SSIM (11x11 Gaussian, sigma 1.5, zero
              padded 'same' filtering, data range 1) on the unclipped output.
  'y_uint8'   MATLAB's evaluate_PSNR_SSIM.m (MPRNet, Restormer): the output
              rounded to uint8 as a saved PNG would be, MATLAB's uint8 Y
              channel, PSNR = 20 log10(255 / RMSE), and Wang et al.'s SSIM
              with 'valid' filtering and L = 255, no border crop.
  'y_float'   DRSformer/RCDNet's statistic.m (DID-Data/Rain1200,
              DDN-Data/Rain1400): im2double of the uint8 images, MATLAB's
              unrounded double Y, PSNR with peak 1, and MATLAB's built-in
              ssim(255 Y, 255 Y_ref): replicate padding, DynamicRange 1 (see
              `y_float_metrics`).

Everything is jittable and batched: images are NHWC float32 RGB in [0, 1],
possibly padded at the bottom/right to a common shape, with each image's real
(height, width) in `sizes`. Batches padded with dummy images carry a mask, and
`metric_sums` adds up the real ones (big_vision's mean evaluator: per-image
metrics summed under a mask, divided once at the end).
"""
import jax
import jax.numpy as jnp
import numpy as np

from dcsfn_jax.metrics.pixels import to_uint8

PROTOCOLS = ('official', 'y_uint8', 'y_float')

# How SSIM filters at the border: zero padding (the released training loss and
# eval.py) or only windows inside the image (MATLAB).
SSIM_PADDINGS = ('same', 'valid')

PROTOCOL_DESCRIPTIONS = {
    'official': ("released eval.py: RGB PSNR on the float output clipped to "
                 "[0,1]; SSIM 11x11 Gaussian sigma 1.5, zero-padded 'same', "
                 'on the unclipped output'),
    'y_uint8': ('MATLAB evaluate_PSNR_SSIM.m: output rounded to uint8, '
                "MATLAB Y channel, PSNR 20log10(255/RMSE), SSIM 'valid' "
                '11x11 Gaussian sigma 1.5 with L=255'),
    'y_float': ('DRSformer/RCDNet statistic.m: im2double of the uint8 '
                'images, unrounded MATLAB Y, PSNR peak 1, MATLAB '
                'ssim(255Y, 255Y_ref): 11x11 Gaussian sigma 1.5, replicate '
                'padding, DynamicRange 1 (C1=1e-4, C2=9e-4); Y and PSNR '
                'verified against GNU Octave 7.3 + image 2.14, SSIM against '
                "Octave imfilter 'replicate' and a float64 scipy reference"),
}

# The protocols in one line, for the commands' --protocol help.
PROTOCOLS_HELP = ('Comma-separated protocols: official (released eval.py: '
                  'RGB, float output, zero-padded SSIM), y_uint8 (MATLAB '
                  'evaluate_PSNR_SSIM.m: uint8 Y, valid SSIM), y_float '
                  '(statistic.m: double Y, MATLAB ssim).')

# PSNR the released eval.py reports for a perfect output (MSE == 0).
OFFICIAL_PSNR_OF_IDENTICAL = 100.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def gaussian_window(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
  """Normalised 1-D Gaussian taps, float32 [size]; the 2-D SSIM window is
  their outer product (MATLAB's fspecial and the released code agree)."""
  offsets = np.arange(size, dtype=np.float64) - size // 2
  taps = np.exp(-offsets**2 / (2.0 * sigma**2))
  return (taps / taps.sum()).astype(np.float32)


def _separable_filter(images, padding):
  """Depthwise 2-D Gaussian filtering of NHWC `images`.

  padding: 'same' zero-pads by half the window (output H x W); 'valid' keeps
  only windows inside the image (output (H-10) x (W-10)).
  """
  channels = images.shape[-1]
  taps = jnp.asarray(gaussian_window())
  half = SSIM_WINDOW // 2
  pad = half if padding == 'same' else 0
  dimension_numbers = ('NHWC', 'HWIO', 'NHWC')
  vertical = jnp.tile(taps.reshape(SSIM_WINDOW, 1, 1, 1), (1, 1, 1, channels))
  horizontal = jnp.tile(taps.reshape(1, SSIM_WINDOW, 1, 1),
                        (1, 1, 1, channels))
  images = jax.lax.conv_general_dilated(
      images, vertical, window_strides=(1, 1), padding=((pad, pad), (0, 0)),
      dimension_numbers=dimension_numbers, feature_group_count=channels,
      precision=jax.lax.Precision.HIGHEST)
  return jax.lax.conv_general_dilated(
      images, horizontal, window_strides=(1, 1), padding=((0, 0), (pad, pad)),
      dimension_numbers=dimension_numbers, feature_group_count=channels,
      precision=jax.lax.Precision.HIGHEST)


def _shifted_filter(images, padding):
  """`_separable_filter` as weighted, shifted slices (rows are axis 1,
  columns axis 2; [B, H, W] or [B, H, W, C]).

  Same values to float32 rounding and 10-20x faster on CPU than XLA's
  depthwise convolution, so the evaluation protocols use it; the training
  loss keeps the convolution. Each pass is a loop over the taps: a loop is
  a fusion barrier, and fused with the other pass or with a reduction of
  the result, XLA's CPU code recomputes the sums for every tap (~10x
  slower).
  """
  taps = jnp.asarray(gaussian_window())
  half = SSIM_WINDOW // 2
  for axis in (1, 2):
    if padding == 'same':
      widths = [(0, 0)] * images.ndim
      widths[axis] = (half, half)
      images = jnp.pad(images, widths)
    length = images.shape[axis] - (SSIM_WINDOW - 1)
    shape = images.shape[:axis] + (length,) + images.shape[axis + 1:]

    def add_tap(offset, total, images=images, axis=axis, length=length):
      return total + taps[offset] * jax.lax.dynamic_slice_in_dim(
          images, offset, length, axis=axis)

    images = jax.lax.fori_loop(0, SSIM_WINDOW, add_tap,
                               jnp.zeros(shape, images.dtype))
  return images


def _ssim_map(a, b, padding, max_val, k1, k2, blur):
  if padding not in SSIM_PADDINGS:
    raise ValueError(f'padding must be one of {SSIM_PADDINGS}, got '
                     f'{padding!r}.')
  c1 = (k1 * max_val)**2
  c2 = (k2 * max_val)**2
  mu_a = blur(a, padding)
  mu_b = blur(b, padding)
  var_a = blur(a * a, padding) - mu_a * mu_a
  var_b = blur(b * b, padding) - mu_b * mu_b
  cov_ab = blur(a * b, padding) - mu_a * mu_b
  return (((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2))
          / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)))


def ssim_map(a, b, *, padding='same', max_val=1.0, k1=0.01, k2=0.03):
  """Per-pixel SSIM (Wang et al. 2004, Eq. 13) of NHWC images, per channel.

  Unlike dm_pix.ssim, variances are not clamped, so values and gradients are
  those of the plain formula, as in the released training loss.

  Args:
    a, b: float [B, H, W, C].
    padding: 'same' (zero padding, [B, H, W, C]) or 'valid'
      ([B, H-10, W-10, C]).
    max_val: the data range L.
  """
  return _ssim_map(a, b, padding, max_val, k1, k2, _separable_filter)


def ssim(a, b, *, padding='same', max_val=1.0):
  """Mean SSIM per image, float32 [B], over pixels and channels.

  With the defaults this is the released training SSIM (REFERENCE §3); the
  training loss is minus its batch mean.
  """
  return _image_mean(ssim_map(a, b, padding=padding, max_val=max_val))


def psnr_from_mse(mse, max_val):
  """10 log10(max_val^2 / mse) in dB; +inf for mse == 0."""
  return 10.0 * jnp.log10(max_val**2 / mse)


def rgb_to_y_uint8(rgb_uint8):
  """MATLAB rgb2ycbcr's luma of uint8 RGB: round(16 + (65.481 R + 128.553 G
  + 24.966 B) / 255), [..., 3] integer-valued floats -> [...] in 16..235.

  Computed in exact integer arithmetic (thousandths of the coefficients), so
  ties round up deterministically instead of by float rounding luck.
  """
  rgb = rgb_uint8.astype(jnp.int32)
  scaled = 65481 * rgb[..., 0] + 128553 * rgb[..., 1] + 24966 * rgb[..., 2]
  return (16 + (scaled + 127500) // 255000).astype(jnp.float32)


def _image_mean(values, weights=None):
  """Mean over every axis but the first, optionally weighted; float32 [B]."""
  if weights is None:
    weights = jnp.ones_like(values)
  weights = jnp.broadcast_to(weights, values.shape)
  # Summing rows first keeps float32 error near sqrt(n) eps on large images.
  total = jnp.sum(jnp.sum(values * weights, axis=2), axis=tuple(
      range(1, values.ndim - 1)))
  count = jnp.sum(jnp.sum(weights, axis=2), axis=tuple(
      range(1, values.ndim - 1)))
  return total / count


def _valid_region(shape, sizes, margin=0):
  """Float mask [B, H, W, 1]: 1 where row < height - margin and
  col < width - margin of each image."""
  batch, height, width = shape[:3]
  if sizes is None:
    sizes = jnp.tile(jnp.asarray([[height, width]], jnp.int32), (batch, 1))
  rows = jnp.arange(height)[None, :, None] < (sizes[:, 0, None, None] - margin)
  cols = jnp.arange(width)[None, None, :] < (sizes[:, 1, None, None] - margin)
  return (rows & cols)[..., None].astype(jnp.float32)


def official_metrics(derained, clean, sizes=None):
  """The released eval.py's PSNR and SSIM per image, float32 [B] each.

  Args:
    derained: model output [B, H, W, 3], unclipped.
    clean: ground truth [B, H, W, 3] in [0, 1].
    sizes: int [B, 2] real (height, width) of images padded bottom/right to
      H x W, or None when every image fills the array.
  """
  region = _valid_region(derained.shape, sizes)
  # Zeroing the padding makes 'same' filtering see exactly the zero padding
  # the released code applies at the real image border.
  derained = derained * region
  clean = clean * region
  error = jnp.clip(derained, 0.0, 1.0) - jnp.clip(clean, 0.0, 1.0)
  mse = _image_mean(error * error, region)
  psnr = jnp.where(mse == 0, OFFICIAL_PSNR_OF_IDENTICAL,
                   psnr_from_mse(mse, 1.0))
  # Channels first ([B, 3, H, W] as 3B planes) vectorises along the rows.
  batch, height, width, channels = derained.shape

  def planes(images):
    return jnp.moveaxis(images, -1, 1).reshape(batch * channels, height, width)

  ssim_planes = _ssim_map(planes(derained), planes(clean), 'same', 1.0, 0.01,
                          0.03, _shifted_filter)
  ssim_value = _image_mean(
      ssim_planes.reshape(batch, channels, height, width),
      jnp.moveaxis(region, -1, 1))
  return {'psnr': psnr, 'ssim': ssim_value}


def y_uint8_metrics(derained, clean, sizes=None):
  """PSNR and SSIM per image as MATLAB's evaluate_PSNR_SSIM.m computes them
  on the saved uint8 PNGs, float32 [B] each (inf PSNR for identical images,
  NaN SSIM for images under 11 px).

  Args: as `official_metrics`.
  """
  # [B, H, W] planes: a trailing axis of 1 would defeat vectorisation.
  region = _valid_region(derained.shape, sizes)[..., 0]
  luma_derained = rgb_to_y_uint8(to_uint8(derained)) * region
  luma_clean = rgb_to_y_uint8(to_uint8(clean)) * region
  error = luma_derained - luma_clean
  psnr = psnr_from_mse(_image_mean(error * error, region), 255.0)
  valid_windows = _valid_region(
      derained.shape, sizes, margin=SSIM_WINDOW - 1)[:, :-(SSIM_WINDOW - 1),
                                                      :-(SSIM_WINDOW - 1), 0]
  ssim_value = _image_mean(
      _ssim_map(luma_derained, luma_clean, 'valid', 255.0, 0.01, 0.03,
                _shifted_filter),
      valid_windows)
  return {'psnr': psnr, 'ssim': ssim_value}


# MATLAB's ssim for doubles: DynamicRange = diff(getrangefromclass) = 1, so
# C1 = (0.01 * 1)^2 and C2 = (0.03 * 1)^2 even though statistic.m passes
# 255 * Y, whose values span 16..235.
Y_FLOAT_SSIM_C1 = 0.01**2
Y_FLOAT_SSIM_C2 = 0.03**2


def rgb_to_y_float(rgb_uint8):
  """MATLAB rgb2ycbcr's luma of im2double(uint8 RGB), not rounded:
  (16 + 65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B = levels / 255.

  Args: integer-valued floats 0..255 [..., 3]. Returns float32 [...] in
  [16/255, 235/255].
  """
  rgb = rgb_uint8.astype(jnp.float32)
  return (16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1]
                  + 24.966 * rgb[..., 2]) / 255.0) / 255.0


def _y_float_difference(a_uint8, b_uint8):
  """Y(a) - Y(b) of `rgb_to_y_float` from the level differences, so the
  result carries no cancellation error; float32 [...]."""
  diff = a_uint8.astype(jnp.float32) - b_uint8.astype(jnp.float32)
  return (65.481 * diff[..., 0] + 128.553 * diff[..., 1]
          + 24.966 * diff[..., 2]) / (255.0 * 255.0)


def replicate_pad(planes, sizes, radius):
  """Pads each image's real region by repeating its border pixels.

  Args:
    planes: float [B, H, W], images padded bottom/right to H x W.
    sizes: int [B, 2] real (height, width), or None for full images.
    radius: pixels added on every side.

  Returns:
    [B, H + 2 radius, W + 2 radius]: entry (y, x) is the real image's pixel
    (clip(y - radius, 0, height - 1), clip(x - radius, 0, width - 1)), so
    whatever lies in the batch padding is never seen.
  """
  batch, height, width = planes.shape
  if sizes is None:
    sizes = jnp.tile(jnp.asarray([[height, width]], jnp.int32), (batch, 1))
  rows = jnp.clip(jnp.arange(height + 2 * radius)[None, :] - radius, 0,
                  sizes[:, 0, None] - 1)
  cols = jnp.clip(jnp.arange(width + 2 * radius)[None, :] - radius, 0,
                  sizes[:, 1, None] - 1)
  planes = jnp.take_along_axis(planes, rows[:, :, None], axis=1)
  return jnp.take_along_axis(planes, cols[:, None, :], axis=2)


def matlab_ssim_map(a, b, sizes=None, *, c1=Y_FLOAT_SSIM_C1,
                    c2=Y_FLOAT_SSIM_C2):
  """MATLAB's ssim(A, ref) map for 2-D doubles with Radius 1.5: 11x11
  Gaussian, replicate padding (the map keeps the image size), Eq. 13 with
  the given C1, C2; float32 [B, H, W].

  Args:
    a, b: float [B, H, W] (e.g. 255 * Y), padded bottom/right; the padding
      is replaced by each image's replicated border (`replicate_pad`).
    sizes: int [B, 2] real (height, width), or None.

  Local variances and the covariance are summed about the local means
  (sum_j w_j (x_j - mu)^2 over the 121 taps) rather than as E[x^2] - mu^2:
  at values near 235 float32 cancellation would leave errors of ~5e-3,
  five times C2, where MATLAB's float64 leaves ~1e-11.
  """
  size = SSIM_WINDOW
  radius = size // 2
  height, width = a.shape[1:3]
  padded_a = replicate_pad(a, sizes, radius)
  padded_b = replicate_pad(b, sizes, radius)
  mu_a = _shifted_filter(padded_a, 'valid')
  mu_b = _shifted_filter(padded_b, 'valid')
  taps = gaussian_window(size).astype(np.float64)
  var_a = jnp.zeros_like(mu_a)
  var_b = jnp.zeros_like(mu_b)
  cov_ab = jnp.zeros_like(mu_a)
  for dy in range(size):
    for dx in range(size):
      weight = np.float32(taps[dy] * taps[dx])
      da = padded_a[:, dy:dy + height, dx:dx + width] - mu_a
      db = padded_b[:, dy:dy + height, dx:dx + width] - mu_b
      var_a = var_a + weight * (da * da)
      var_b = var_b + weight * (db * db)
      cov_ab = cov_ab + weight * (da * db)
  return (((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2))
          / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)))


def y_float_metrics(derained, clean, sizes=None):
  """PSNR and SSIM per image as DRSformer/RCDNet's statistic.m computes them
  on the saved uint8 PNGs, float32 [B] each (inf PSNR for identical images).

    x = im2double(imread(png)); Y = rgb2ycbcr(x)(:, :, 1)   (unrounded)
    psnr(Y, Y_ref) with peak 1;  ssim(255 Y, 255 Y_ref)     (built-in)

  The built-in ssim on doubles (MATLAB documentation, ssim: 'Radius'
  default 1.5; 'DynamicRange' default diff(getrangefromclass(A)) = 1 for
  double; the map has the size of A) filters with a Gaussian of
  2*ceil(3*Radius)+1 = 11 taps and 'replicate' padding (ssim.m:
  fspecial('gaussian', filtSize, radius) with imfilter(..., 'replicate'),
  or imgaussfilt(..., 'FilterSize', filtSize, 'Padding', 'replicate') in
  later releases) and averages the whole map. With DynamicRange 1 on a
  0..255 signal, C1 = 1e-4 and C2 = 9e-4 are all but absent.

  Args: as `official_metrics` (outputs are rounded to uint8 first, as the
  saved PNG is).
  """
  region = _valid_region(derained.shape, sizes)[..., 0]
  derained_uint8 = to_uint8(derained)
  clean_uint8 = to_uint8(clean)
  error = _y_float_difference(derained_uint8, clean_uint8) * region
  psnr = psnr_from_mse(_image_mean(error * error, region), 1.0)
  ssim_value = _image_mean(
      matlab_ssim_map(255.0 * rgb_to_y_float(derained_uint8),
                      255.0 * rgb_to_y_float(clean_uint8), sizes), region)
  return {'psnr': psnr, 'ssim': ssim_value}


_PROTOCOL_FUNCTIONS = {
    'official': official_metrics,
    'y_uint8': y_uint8_metrics,
    'y_float': y_float_metrics,
}


def check_protocols(protocols):
  """Returns `protocols` as a tuple; ValueError naming the bad ones."""
  protocols = tuple(protocols)
  unknown = [p for p in protocols if p not in _PROTOCOL_FUNCTIONS]
  if unknown or not protocols:
    raise ValueError(f'Unknown evaluation protocol(s) {unknown}; choose from '
                     f'{list(PROTOCOLS)}.')
  return protocols


def image_metrics(derained, clean, sizes=None, *, protocols=PROTOCOLS):
  """Per-image metrics under each protocol, {'PROTOCOL/psnr': [B],
  'PROTOCOL/ssim': [B]}; arguments as `official_metrics`."""
  metrics = {}
  for protocol in check_protocols(protocols):
    for name, value in _PROTOCOL_FUNCTIONS[protocol](
        derained, clean, sizes).items():
      metrics[f'{protocol}/{name}'] = value
  return metrics


def metric_sums(metrics, mask):
  """Sums of each per-image metric over the real images of a padded batch.

  Args:
    metrics: dict of float [B].
    mask: bool or 0/1 [B], true for real images.

  Returns:
    dict of scalars: each metric's masked sum, plus 'count'. Divide the
    accumulated sums by the accumulated count once, at the end.
  """
  mask = jnp.asarray(mask).astype(bool)
  sums = {name: jnp.sum(jnp.where(mask, value, 0.0))
          for name, value in metrics.items()}
  sums['count'] = jnp.sum(mask.astype(jnp.float32))
  return sums
