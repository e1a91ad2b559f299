"""Inner-scale connection block (ICB, paper §3.2; REFERENCE §2.1)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcsfn_jax.models import layers
from dcsfn_jax.models.config import resolved_conv_impl

SCALE_FACTORS = (1, 2, 4, 8)


class InnerScaleConnectionBlock(nn.Module):
  """x [B, H, W, C] -> [B, H, W, C].

  Scale k sees max_pool(x, k) (pooled directly from x, not cascaded). From the
  coarsest scale down, each scale runs `convs_per_scale` [conv3x3, LReLU]; with
  the inner-scale connection a finer scale first fuses its pooled input with the
  coarser scale's result (fusion{coarse}{fine}, 1x1 2C->C). The block returns
  fusion_all(concat[s1, up(s2), up(s4), up(s8)]) + x; with one scale, s1 + x.
  """
  config: object  # FrozenConfigDict, see dcsfn_jax.models.config.

  def _conv_stack(self, scale: int, features: jax.Array) -> jax.Array:
    config = self.config
    for j in range(config.convs_per_scale):
      features = layers.leaky_relu(layers.conv3x3(
          config.channels, in_features=config.channels,
          groups=config.conv_groups, conv_impl=resolved_conv_impl(config),
          dtype=jnp.dtype(config.dtype), name=f'scale{scale}_conv_{j}')(
              features))
    return features

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    config = self.config
    channels, dtype = config.channels, jnp.dtype(config.dtype)
    conv_impl = resolved_conv_impl(config)
    scales = SCALE_FACTORS[:config.num_scales]
    if len(scales) == 1:
      return self._conv_stack(1, x) + x

    per_scale = {}
    coarser = None
    for scale in reversed(scales):
      features = layers.max_pool(x, scale)
      if coarser is not None and config.inner_scale_connection:
        coarse_to_fine = layers.resize_like(per_scale[coarser], features)
        features = layers.leaky_relu(layers.conv1x1(
            channels, in_features=2 * channels, conv_impl=conv_impl,
            dtype=dtype, name=f'fusion{coarser}{scale}')(
                jnp.concatenate([features, coarse_to_fine], axis=-1)))
      per_scale[scale] = self._conv_stack(scale, features)
      coarser = scale

    upsampled = [per_scale[1]] + [
        layers.resize_like(per_scale[scale], x) for scale in scales[1:]]
    fused = layers.leaky_relu(layers.conv1x1(
        channels, in_features=len(scales) * channels, conv_impl=conv_impl,
        dtype=dtype, name='fusion_all')(jnp.concatenate(upsampled, axis=-1)))
    return fused + x
