"""Inner-scale connection block (ICB, paper §3.2; REFERENCE §2.1)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from dcsfn_jax.models import layers

SCALE_FACTORS = (1, 2, 4, 8)


class InnerScaleConnectionBlock(nn.Module):
  """x [B, H, W, C] -> [B, H, W, C].

  Scale k sees max_pool(x, k) (pooled directly from x, not cascaded). From the
  coarsest scale down, each scale runs `convs_per_scale` [conv3x3, LReLU]; with
  the inner-scale connection a finer scale first fuses its pooled input with the
  coarser scale's result (fusion{coarse}{fine}, 1x1 2C->C). The block returns
  fusion_all(concat[s1, up(s2), up(s4), up(s8)]) + x; with one scale, s1 + x.

  Attributes:
    channels: C.
    num_scales: scales 1, 2, 4, 8 up to this many.
    convs_per_scale: 3x3 convs per scale.
    conv_groups: feature groups of those 3x3 convs.
    inner_scale_connection: fuse each scale with the coarser one.
    dtype: compute dtype; parameters are float32.
    conv: the conv factory (`layers.ConvFactory`).
  """
  channels: int
  num_scales: int
  convs_per_scale: int
  conv_groups: int
  inner_scale_connection: bool
  dtype: DTypeLike
  conv: layers.ConvFactory

  def _conv_stack(self, scale: int, features: jax.Array) -> jax.Array:
    for j in range(self.convs_per_scale):
      features = layers.leaky_relu(self.conv(
          self.channels, 3, in_features=self.channels,
          groups=self.conv_groups, dtype=self.dtype,
          name=f'scale{scale}_conv_{j}')(features))
    return features

  def _fusion(self, in_features: int, name: str) -> nn.Module:
    return self.conv(self.channels, 1, in_features=in_features,
                     dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = self.channels
    scales = SCALE_FACTORS[:self.num_scales]
    if len(scales) == 1:
      return self._conv_stack(1, x) + x

    per_scale = {}
    coarser = None
    for scale in reversed(scales):
      features = layers.max_pool(x, scale)
      if coarser is not None and self.inner_scale_connection:
        coarse_to_fine = layers.resize_like(per_scale[coarser], features)
        features = layers.leaky_relu(
            self._fusion(2 * channels, f'fusion{coarser}{scale}')(
                jnp.concatenate([features, coarse_to_fine], axis=-1)))
      per_scale[scale] = self._conv_stack(scale, features)
      coarser = scale

    upsampled = [per_scale[1]] + [
        layers.resize_like(per_scale[scale], x) for scale in scales[1:]]
    fused = layers.leaky_relu(self._fusion(len(scales) * channels,
                                           'fusion_all')(
        jnp.concatenate(upsampled, axis=-1)))
    return fused + x
