"""An independent PyTorch twin of DCSFN, keyed like the released module.

`build_torch_model(model_config)` reads the same ml_collections model config as
`dcsfn_jax.models.build_model` and returns an `nn.Module` whose `state_dict()`
has exactly the released module's keys and shapes for the official preset
(4,118 tensors, 6,453,147 values). It is what exported weights run on without
the authors' repository, and the reference the Flax model is tested against.

Conventions (all from the released network): NCHW float32; every conv has a
bias, stride 1 and zero padding; activation LeakyReLU(0.2); max pooling with
k x k windows and stride k (odd sizes floor); every resize is PyTorch's legacy
`nearest` to an explicit size. The twin takes images in the channel order of
its weights (BGR for the released weights) and never flips channels;
`model_config.channel_order` and `model_config.dtype` are not read here.

Tensors the released module owns but never reads (in GRU mode: fusion_1_2_2,
fusion_2_2_2 and conv_{xr,hz,hr,hn} of rec1_4 and rec2_1, whose cells always
start without state; with cross_scale=False: every recurrent cell) exist here
too, so a released checkpoint loads with strict=True.
"""
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from dcsfn_jax import models

_SLOPE = 0.2
_POOLS = (1, 2, 4, 8)


def _conv(in_channels: int, out_channels: int, kernel_size: int,
          groups: int = 1) -> nn.Conv2d:
  return nn.Conv2d(in_channels, out_channels, kernel_size,
                   padding=kernel_size // 2, groups=groups)


def _conv_lrelu(in_channels: int, out_channels: int, kernel_size: int,
                groups: int = 1) -> nn.Sequential:
  """[conv, LeakyReLU(0.2)]; the conv is entry `.0`, as in the released keys."""
  return nn.Sequential(_conv(in_channels, out_channels, kernel_size, groups),
                       nn.LeakyReLU(_SLOPE))


def resize_nearest(x: torch.Tensor, size) -> torch.Tensor:
  """PyTorch's legacy nearest resize of NCHW `x` to `size` = (h, w)."""
  if tuple(x.shape[-2:]) == tuple(size):
    return x
  return F.interpolate(x, size=tuple(size), mode='nearest')


def _pool(x: torch.Tensor, factor: int) -> torch.Tensor:
  return x if factor == 1 else F.max_pool2d(x, factor, factor)


class InnerScaleBlock(nn.Module):
  """Inner-scale connection block (ICB), NCHW [B, C, H, W] -> same shape.

  Scales are pooled directly from the input (1, 2, 4, 8 up to `num_scales`),
  processed coarse to fine, each scale (but the coarsest) first fusing its
  pooled input with the resized coarser result; the final 1x1 fusion sees
  [s1, up(s2), up(s4), up(s8)] and the block adds its input.
  """

  def __init__(self, channels: int, num_scales: int, convs_per_scale: int,
               conv_groups: int, inner_scale_connection: bool):
    super().__init__()
    self.num_scales = num_scales
    self.inner_scale_connection = inner_scale_connection
    pools = _POOLS[:num_scales]
    for pool in _POOLS:
      convs = [_conv_lrelu(channels, channels, 3, conv_groups)
               for _ in range(convs_per_scale)] if pool in pools else []
      self.add_module(f'scale{pool}', nn.ModuleList(convs))
    if inner_scale_connection:
      for coarse, fine in ((8, 4), (4, 2), (2, 1)):
        if coarse in pools:
          self.add_module(f'fusion{coarse}{fine}',
                          _conv_lrelu(2 * channels, channels, 1))
    if num_scales > 1:
      self.fusion_all = _conv_lrelu(num_scales * channels, channels, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    full_size = x.shape[-2:]
    scale_outputs = {}
    coarser = None
    for pool in reversed(_POOLS[:self.num_scales]):
      feature = _pool(x, pool)
      if coarser is not None and self.inner_scale_connection:
        fusion = getattr(self, f'fusion{2 * pool}{pool}')
        feature = fusion(torch.cat(
            [feature, resize_nearest(coarser, feature.shape[-2:])], dim=1))
      for conv in getattr(self, f'scale{pool}'):
        feature = conv(feature)
      scale_outputs[pool] = coarser = feature
    if self.num_scales == 1:
      return scale_outputs[1] + x
    fused = self.fusion_all(torch.cat(
        [resize_nearest(scale_outputs[pool], full_size)
         for pool in _POOLS[:self.num_scales]], dim=1))
    return fused + x


class DenseCoder(nn.Module):
  """Dense encoder (skips=None) or decoder (skips given) of L ICBs.

  Block i reads `out` (+ the encoder's block-i output in a decoder with skip
  connections); with dense connections `out` becomes the 1x1 fusion of
  [input, t_0, ..., t_i], otherwise t_i itself.
  """

  def __init__(self, model_config):
    super().__init__()
    c = model_config.channels
    self.dense_connection = model_config.dense_connection
    self.skip_connection = model_config.skip_connection
    self.units = nn.ModuleList([
        InnerScaleBlock(c, model_config.num_scales,
                        model_config.convs_per_scale, model_config.conv_groups,
                        model_config.inner_scale_connection)
        for _ in range(model_config.num_blocks)])
    if self.dense_connection:
      self.conv1x1 = nn.ModuleList([
          _conv_lrelu((i + 2) * c, c, 1)
          for i in range(model_config.num_blocks)])

  def forward(self, x: torch.Tensor,
              skips: Optional[list] = None) -> tuple:
    """Returns (out [B, C, H, W], block outputs t_i before the dense fusion)."""
    concatenated = [x]
    block_outputs = []
    out = x
    for i, unit in enumerate(self.units):
      block_input = out
      if skips is not None and self.skip_connection:
        block_input = out + skips[i]
      block_output = unit(block_input)
      block_outputs.append(block_output)
      if self.dense_connection:
        concatenated.append(block_output)
        out = self.conv1x1[i](torch.cat(concatenated, dim=1))
      else:
        out = block_output
    return out, block_outputs


class ConvCell(nn.Module):
  """'Conv' unit: h' = LReLU(conv x); it keeps no state."""

  def __init__(self, channels: int):
    super().__init__()
    self.conv = _conv(channels, channels, 3)

  def forward(self, x, state=None):
    return F.leaky_relu(self.conv(x), _SLOPE), None


class RNNCell(nn.Module):
  """h' = LReLU(tanh(conv_x x [+ conv_h h]))."""

  def __init__(self, channels: int):
    super().__init__()
    self.conv_x = _conv(channels, channels, 3)
    self.conv_h = _conv(channels, channels, 3)

  def forward(self, x, state=None):
    pre = self.conv_x(x)
    if state is not None:
      pre = pre + self.conv_h(state)
    h = F.leaky_relu(torch.tanh(pre), _SLOPE)
    return h, h


class GRUCell(nn.Module):
  """Convolutional GRU; without state only the update gate and x-candidate."""

  def __init__(self, channels: int):
    super().__init__()
    for name in ('conv_xz', 'conv_xr', 'conv_xn',
                 'conv_hz', 'conv_hr', 'conv_hn'):
      self.add_module(name, _conv(channels, channels, 3))

  def forward(self, x, state=None):
    if state is None:
      update = torch.sigmoid(self.conv_xz(x))
      h = update * torch.tanh(self.conv_xn(x))
    else:
      update = torch.sigmoid(self.conv_xz(x) + self.conv_hz(state))
      reset = torch.sigmoid(self.conv_xr(x) + self.conv_hr(state))
      candidate = torch.tanh(self.conv_xn(x) + self.conv_hn(reset * state))
      h = (1 - update) * state + update * candidate
    h = F.leaky_relu(h, _SLOPE)
    return h, h


class LSTMCell(nn.Module):
  """Convolutional LSTM; state is [h, c], with c left unactivated."""

  def __init__(self, channels: int):
    super().__init__()
    for name in ('conv_xf', 'conv_xi', 'conv_xo', 'conv_xj',
                 'conv_hf', 'conv_hi', 'conv_ho', 'conv_hj'):
      self.add_module(name, _conv(channels, channels, 3))

  def forward(self, x, state=None):
    if state is None:
      input_gate = torch.sigmoid(self.conv_xi(x))
      output_gate = torch.sigmoid(self.conv_xo(x))
      cell = input_gate * torch.tanh(self.conv_xj(x))
      h = output_gate * cell
    else:
      h_prev, c_prev = state
      forget_gate = torch.sigmoid(self.conv_xf(x) + self.conv_hf(h_prev))
      input_gate = torch.sigmoid(self.conv_xi(x) + self.conv_hi(h_prev))
      output_gate = torch.sigmoid(self.conv_xo(x) + self.conv_ho(h_prev))
      candidate = torch.tanh(self.conv_xj(x) + self.conv_hj(h_prev))
      cell = forget_gate * c_prev + input_gate * candidate
      h = output_gate * torch.tanh(cell)
    h = F.leaky_relu(h, _SLOPE)
    return h, [h, cell]


RECURRENT_CELLS = {'GRU': GRUCell, 'LSTM': LSTMCell, 'RNN': RNNCell,
                   'Conv': ConvCell}


def _resize_state(state, size):
  if state is None or isinstance(state, torch.Tensor):
    return None if state is None else resize_nearest(state, size)
  return [resize_nearest(part, size) for part in state]


class DCSFNTwin(nn.Module):
  """Three-scale DCSFN (or the single-network ablation), NCHW in and out.

  forward(images [B, 3, H, W]) -> derained images O - R; with
  `return_intermediates=True` -> (derained, features), features named like the
  Flax model's sown intermediates: 'converted'; 'encoded_scale{s}',
  'skip_features_scale{s}' ([L, B, C, h, w] raw block outputs);
  'cross_pass1_scale{s}', 'cross_pass2_scale{s}' (cell outputs, with
  cross_scale); 'decoded_scale{s}'; 'rain_estimate' (R, [B, 3, H, W]). The
  single variant drops the '_scale{s}' suffix.
  """

  def __init__(self, model_config):
    super().__init__()
    c = model_config.channels
    self.single = model_config.single
    self.cross_scale = model_config.cross_scale
    self.recurrent_unit = model_config.recurrent_unit
    self.convert = _conv_lrelu(3, c, 3)
    if self.single:
      self.encoder = DenseCoder(model_config)
      self.decoder = DenseCoder(model_config)
      self.merge = nn.Sequential(_conv(c, 3, 1), nn.LeakyReLU(_SLOPE),
                                 _conv(3, 3, 3))
      return
    for scale in (1, 2, 4):
      self.add_module(f'encoder_scale{scale}', DenseCoder(model_config))
    if self.cross_scale:
      for name in ('fusion_1_2_1', 'fusion_1_2_2',
                   'fusion_2_2_1', 'fusion_2_2_2'):
        self.add_module(name, _conv_lrelu(2 * c, c, 1))
    for scale in (1, 2, 4):
      self.add_module(f'decoder_scale{scale}', DenseCoder(model_config))
    # The released module builds the cells even when cross_scale is off.
    cell = RECURRENT_CELLS[self.recurrent_unit]
    for name in ('rec1_1', 'rec1_2', 'rec1_4', 'rec2_1', 'rec2_2', 'rec2_4'):
      self.add_module(name, cell(c))
    self.merge = nn.Sequential(_conv(3 * c, 3, 1), nn.LeakyReLU(_SLOPE),
                               _conv(3, 3, 3))

  def _fuse_states(self, pass_index: int, first, second, size):
    """Fuses two cell states resized to `size` with fusion_{pass}_2_{1,2}."""
    if first is None:  # 'Conv' cells carry no state.
      return None
    fuse_h = getattr(self, f'fusion_{pass_index}_2_1')
    if self.recurrent_unit != 'LSTM':
      return fuse_h(torch.cat([resize_nearest(first, size),
                               resize_nearest(second, size)], dim=1))
    fuse_c = getattr(self, f'fusion_{pass_index}_2_2')
    return [fuse(torch.cat([resize_nearest(a, size), resize_nearest(b, size)],
                           dim=1))
            for fuse, a, b in ((fuse_h, first[0], second[0]),
                               (fuse_c, first[1], second[1]))]

  def _cross_scale(self, e1, e2, e4, intermediates):
    size1, size2, size4 = e1.shape[-2:], e2.shape[-2:], e4.shape[-2:]
    # Pass 1, coarse to fine.
    a4, h4 = self.rec1_4(e4)
    h4_at_2 = _resize_state(h4, size2)
    a2, h2 = self.rec1_2(e2, h4_at_2)
    # The released LSTM branch resizes its stored h4 in place, so h4 reaches
    # full size via the half-size copy; GRU/RNN resize it directly.
    h4_source = h4_at_2 if self.recurrent_unit == 'LSTM' else h4
    a1, _ = self.rec1_1(e1, self._fuse_states(1, h2, h4_source, size1))
    # Pass 2, fine to coarse, resizing (not pooling) the states down.
    b1, g1 = self.rec2_1(a1)
    g1_at_2 = _resize_state(g1, size2)
    b2, g2 = self.rec2_2(a2, g1_at_2)
    g1_source = g1_at_2 if self.recurrent_unit == 'LSTM' else g1
    b4, _ = self.rec2_4(a4, self._fuse_states(2, g1_source, g2, size4))
    intermediates.update(cross_pass1_scale1=a1, cross_pass1_scale2=a2,
                         cross_pass1_scale4=a4, cross_pass2_scale1=b1,
                         cross_pass2_scale2=b2, cross_pass2_scale4=b4)
    return b1, b2, b4

  def forward(self, images: torch.Tensor, return_intermediates: bool = False):
    intermediates = {}
    features = self.convert(images)
    intermediates['converted'] = features
    if self.single:
      encoded, skips = self.encoder(features)
      decoded, _ = self.decoder(encoded, skips)
      intermediates.update(encoded=encoded, skip_features=torch.stack(skips),
                           decoded=decoded)
      rain_estimate = self.merge(decoded)
    else:
      encoded, skips = {}, {}
      for scale in (1, 2, 4):
        coder = getattr(self, f'encoder_scale{scale}')
        encoded[scale], skips[scale] = coder(_pool(features, scale))
        intermediates[f'encoded_scale{scale}'] = encoded[scale]
        intermediates[f'skip_features_scale{scale}'] = torch.stack(skips[scale])
      if self.cross_scale:
        decoder_inputs = self._cross_scale(encoded[1], encoded[2], encoded[4],
                                           intermediates)
      else:
        decoder_inputs = (encoded[1], encoded[2], encoded[4])
      decoded = []
      for scale, decoder_input in zip((1, 2, 4), decoder_inputs):
        coder = getattr(self, f'decoder_scale{scale}')
        out, _ = coder(decoder_input, skips[scale])
        intermediates[f'decoded_scale{scale}'] = out
        decoded.append(resize_nearest(out, images.shape[-2:]))
      rain_estimate = self.merge(torch.cat(decoded, dim=1))
    intermediates['rain_estimate'] = rain_estimate
    derained = images - rain_estimate
    if return_intermediates:
      return derained, intermediates
    return derained


def build_torch_model(model_config) -> DCSFNTwin:
  """The PyTorch twin for `model_config` (a dcsfn_jax.models model config).

  Raises ValueError naming the field when the config is unusable.
  """
  models.validate(model_config)
  return DCSFNTwin(model_config)
