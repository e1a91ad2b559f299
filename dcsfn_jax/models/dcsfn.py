"""The full DCSFN network (paper §3; REFERENCE §2.3) and its single-scale ablation.

Inputs and outputs
  images [B, H, W, 3] float32 RGB in [0, 1], any H, W >= 1. `__call__` returns
  the derained image O - R (same shape, not clamped); the `rain_estimate`
  method returns R. With channel_order='bgr' the network runs in BGR (as the
  released weights expect) and both are flipped back to RGB.

Sizes
  Pooling floors odd sizes (k x k windows, stride k, 'VALID'), so when H or W
  is not a multiple of 4 the x1/2 and x1/4 branches (and the coarse ICB scales)
  see floor(H/2), floor(H/4) and ignore the last row(s)/column(s); every resize
  back up is PyTorch's legacy nearest with a float32 scale, exactly as the
  released code (multiples of 4 give exact repeat/stride resizes). Inputs below
  the minimum size (4 * 2**(num_scales-1) per side for the full model, 32 for
  the official preset; 2**(num_scales-1) for `single`) are padded at the
  bottom/right (reflect where the pad is smaller than the side, else edge) and
  the result is cropped back; the released code crashes there.

Intermediate features
  Run `model.apply(variables, images, mutable=['intermediates'])` to get
  (output, {'intermediates': ...}) with the sown features, each a 1-tuple:
  'converted'; 'encoded_scale{s}' (encoder output), 'skip_features_scale{s}'
  ([L, B, h, w, C] raw block outputs); 'cross_pass1_scale{s}',
  'cross_pass2_scale{s}' (cell outputs; with cross_scale); 'decoded_scale{s}';
  'rain_estimate'. For `single`, s is omitted ('encoded', 'skip_features',
  'decoded'). Features are in the network's channel order and in the padded
  frame for small inputs.

LSTM quirk (kept for parity with the released code): the released code
resizes the LSTM state list in place, so in pass 1 the x1/4 state reaches x1 as
resize(resize(h4 -> x1/2) -> x1), and in pass 2 the x1 state reaches x1/4 as
resize(resize(g1 -> x1/2) -> x1/4). GRU and RNN states are resized directly.
The two agree whenever the sizes are multiples of 4.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from dcsfn_jax.models import layers
from dcsfn_jax.models.dense import DenseDecoder, DenseEncoder
from dcsfn_jax.models.icb import InnerScaleConnectionBlock
from dcsfn_jax.models.recurrent import CELLS

BRANCH_SCALES = (1, 2, 4)


def minimum_size(config) -> int:
  """Smallest side the network runs on natively (smaller inputs are padded).

  config: a model config or a DCSFN (reads num_scales and single).
  """
  coarsest_pool = 2 ** (config.num_scales - 1)
  return coarsest_pool if config.single else 4 * coarsest_pool


def _pad_axis(images: jax.Array, axis: int, size: int) -> jax.Array:
  pad = size - images.shape[axis]
  if pad <= 0:
    return images
  widths = [(0, 0)] * images.ndim
  widths[axis] = (0, pad)
  mode = 'reflect' if pad < images.shape[axis] else 'edge'
  return jnp.pad(images, widths, mode=mode)


def _resize_state(state, height: int, width: int):
  """Resizes a recurrent state (array, (h, c) tuple or None)."""
  return jax.tree.map(lambda s: layers.resize_nearest(s, height, width), state)


class DCSFN(nn.Module):
  """DCSFN derainer; see the module docstring for inputs, sizes and features.

  The fields are the model config's (`dcsfn_jax.models.config`, which says
  what each does), typed, with conv_impl as the conv factory it names
  (`layers.CONVS`); `dcsfn_jax.models.build_model` maps a config onto them.
  """
  channels: int
  num_blocks: int
  num_scales: int
  convs_per_scale: int
  conv_groups: int
  inner_scale_connection: bool
  dense_connection: bool
  skip_connection: bool
  cross_scale: bool
  single: bool
  recurrent_unit: str
  channel_order: str
  dtype: DTypeLike
  scan_blocks: bool
  remat: bool
  conv: layers.ConvFactory

  def _record(self, name: str, value) -> None:
    # Not during init, so that init returns parameters only.
    if not self.is_initializing():
      self.sow('intermediates', name, value)

  def _conv(self, features, kernel_size, in_features, name):
    return self.conv(features, kernel_size, in_features=in_features,
                     dtype=self.dtype, name=name)

  def _cell(self, name: str) -> nn.Module:
    return CELLS[self.recurrent_unit](channels=self.channels,
                                      dtype=self.dtype, conv=self.conv,
                                      name=name)

  def _dense_stack(self, stack, name: str, **fields) -> nn.Module:
    """A DenseEncoder or DenseDecoder of this network's blocks."""
    block = functools.partial(
        InnerScaleConnectionBlock, channels=self.channels,
        num_scales=self.num_scales, convs_per_scale=self.convs_per_scale,
        conv_groups=self.conv_groups,
        inner_scale_connection=self.inner_scale_connection, dtype=self.dtype,
        conv=self.conv)
    return stack(channels=self.channels, num_blocks=self.num_blocks,
                 dense_connection=self.dense_connection, block=block,
                 scan_blocks=self.scan_blocks, remat=self.remat,
                 dtype=self.dtype, conv=self.conv, name=name, **fields)

  def _encoder(self, name: str) -> nn.Module:
    return self._dense_stack(DenseEncoder, name)

  def _decoder(self, name: str) -> nn.Module:
    return self._dense_stack(DenseDecoder, name,
                             skip_connection=self.skip_connection)

  def _fuse(self, pass_index: int, first, second):
    """fusion_{p}_2_1 on the hidden maps (and fusion_{p}_2_2 on LSTM cells)."""
    if first is None:  # The stateless 'Conv' unit has nothing to fuse.
      return None
    channels = self.channels
    fuse = lambda part, a, b: layers.leaky_relu(self._conv(
        channels, 1, 2 * channels, f'fusion_{pass_index}_2_{part}')(
            jnp.concatenate([a, b], axis=-1)))
    if isinstance(first, tuple):
      return (fuse(1, first[0], second[0]), fuse(2, first[1], second[1]))
    return fuse(1, first, second)

  def _cross_scale(self, encoded):
    """Two recurrent passes over the branches {1: e1, 2: e2, 4: e4}."""
    lstm = self.recurrent_unit == 'LSTM'
    size = {s: encoded[s].shape[1:3] for s in BRANCH_SCALES}

    # Pass 1, coarse to fine.
    a4, h4 = self._cell('rec1_4')(encoded[4], None)
    h4_half = _resize_state(h4, *size[2])
    a2, h2 = self._cell('rec1_2')(encoded[2], h4_half)
    h4_full = _resize_state(h4_half if lstm else h4, *size[1])
    a1, _ = self._cell('rec1_1')(
        encoded[1], self._fuse(1, _resize_state(h2, *size[1]), h4_full))
    # Pass 2, fine to coarse (nearest resize down, not pooling).
    b1, g1 = self._cell('rec2_1')(a1, None)
    g1_half = _resize_state(g1, *size[2])
    b2, g2 = self._cell('rec2_2')(a2, g1_half)
    g1_quarter = _resize_state(g1_half if lstm else g1, *size[4])
    b4, _ = self._cell('rec2_4')(
        a4, self._fuse(2, g1_quarter, _resize_state(g2, *size[4])))
    for s, value in zip(BRANCH_SCALES, (a1, a2, a4)):
      self._record(f'cross_pass1_scale{s}', value)
    for s, value in zip(BRANCH_SCALES, (b1, b2, b4)):
      self._record(f'cross_pass2_scale{s}', value)
    return {1: b1, 2: b2, 4: b4}

  def _rain_multi_scale(self, converted):
    encoded, skips = {}, {}
    for s in BRANCH_SCALES:
      encoded[s], skips[s] = self._encoder(f'encoder_scale{s}')(
          layers.max_pool(converted, s))
      self._record(f'encoded_scale{s}', encoded[s])
      self._record(f'skip_features_scale{s}', skips[s])
    crossed = self._cross_scale(encoded) if self.cross_scale else encoded
    decoded = []
    for s in BRANCH_SCALES:
      out = self._decoder(f'decoder_scale{s}')(crossed[s], skips[s])
      self._record(f'decoded_scale{s}', out)
      decoded.append(layers.resize_like(out, converted))
    merged = jnp.concatenate(decoded, axis=-1)
    return layers.leaky_relu(self._conv(
        3, 1, len(BRANCH_SCALES) * self.channels, 'merge_conv1x1')(merged))

  def _rain_single_scale(self, converted):
    encoded, skips = self._encoder('encoder')(converted)
    self._record('encoded', encoded)
    self._record('skip_features', skips)
    decoded = self._decoder('decoder')(encoded, skips)
    self._record('decoded', decoded)
    return layers.leaky_relu(self._conv(3, 1, self.channels, 'merge_conv1x1')(
        decoded))

  def _rain_network_order(self, images):
    """R for images in the network's channel order, at a runnable size."""
    converted = layers.leaky_relu(
        self._conv(self.channels, 3, 3, 'convert')(images))
    self._record('converted', converted)
    if self.single:
      merged = self._rain_single_scale(converted)
    else:
      merged = self._rain_multi_scale(converted)
    rain = self._conv(3, 3, 3, 'merge_conv3x3')(merged).astype(
        layers.accumulation_dtype(self.dtype))
    self._record('rain_estimate', rain)
    return rain

  @nn.compact
  def rain_estimate(self, images: jax.Array) -> jax.Array:
    """images [B, H, W, 3] RGB in [0, 1] -> rain layer R [B, H, W, 3], RGB."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
          f'DCSFN expects images shaped [batch, height, width, 3]; got '
          f'{images.shape}.')
    height, width = images.shape[1:3]
    bgr = self.channel_order == 'bgr'
    network_input = images[..., ::-1] if bgr else images
    size = minimum_size(self)
    network_input = _pad_axis(_pad_axis(network_input, 1, size), 2, size)
    rain = self._rain_network_order(network_input)[:, :height, :width]
    return rain[..., ::-1] if bgr else rain

  def __call__(self, images: jax.Array) -> jax.Array:
    """images [B, H, W, 3] RGB in [0, 1] -> derained O - R, same shape."""
    return images - self.rain_estimate(images)
