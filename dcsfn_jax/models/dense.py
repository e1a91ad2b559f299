"""Dense encoder and decoder of inner-scale blocks (paper §3.3; REFERENCE §2.2)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcsfn_jax.models import layers
from dcsfn_jax.models.icb import InnerScaleConnectionBlock


class _DenseStack(nn.Module):
  """L blocks; with the dense connection, block i's output is fused with every
  earlier block output and the stack input by conv1x1_{i} ((i+2)C -> C, LReLU).
  """
  config: object

  def _run(self, x: jax.Array, skip_features: jax.Array | None):
    config = self.config
    concatenated = [x]
    out = x
    block_outputs = []
    for i in range(config.num_blocks):
      block_input = out if skip_features is None else out + skip_features[i]
      block_output = InnerScaleConnectionBlock(config, name=f'block_{i}')(
          block_input)
      block_outputs.append(block_output)
      if config.dense_connection:
        concatenated.append(block_output)
        out = layers.leaky_relu(layers.conv1x1(
            config.channels, in_features=(i + 2) * config.channels,
            dtype=jnp.dtype(config.dtype), name=f'conv1x1_{i}')(
                jnp.concatenate(concatenated, axis=-1)))
      else:
        out = block_output
    return out, jnp.stack(block_outputs)


class DenseEncoder(_DenseStack):
  """x [B, H, W, C] -> (out [B, H, W, C], skip_features [L, B, H, W, C]).

  skip_features are the raw block outputs t_i, before the dense 1x1 fusion.
  """

  @nn.compact
  def __call__(self, x: jax.Array):
    return self._run(x, None)


class DenseDecoder(_DenseStack):
  """(x [B, H, W, C], skip_features [L, B, H, W, C]) -> out [B, H, W, C].

  Block i sees out + skip_features[i] (the encoder's block i, not mirrored);
  without the skip connection it sees out alone.
  """

  @nn.compact
  def __call__(self, x: jax.Array, skip_features: jax.Array) -> jax.Array:
    out, _ = self._run(
        x, skip_features if self.config.skip_connection else None)
    return out
