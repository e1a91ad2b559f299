"""Dense encoder and decoder of inner-scale blocks (paper §3.3; REFERENCE §2.2).

Parameters are per block (block_{i}, conv1x1_{i}), matching the released
state_dict, or stacked (`stacking.stack_blocks`; what the trainer holds).
With `scan_blocks` (the default) the forward pass stacks them if needed and
runs the blocks as one `lax.scan` (`dense_scan`, whose VJP recomputes each
block's internals unless config.remat is False); it compiles in seconds,
where the unrolled graph (used by `model.init` and with scan_blocks=False)
takes minutes for the official preset.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcsfn_jax.models import dense_scan
from dcsfn_jax.models import layers
from dcsfn_jax.models import stacking
from dcsfn_jax.models.config import resolved_conv_impl
from dcsfn_jax.models.icb import InnerScaleConnectionBlock


class _DenseStack(nn.Module):
  """L blocks; with the dense connection, block i's output is fused with every
  earlier block output and the stack input by conv1x1_{i} ((i+2)C -> C, LReLU).
  """
  config: object

  def _run(self, x: jax.Array, skip_features: jax.Array | None):
    if self.is_initializing():
      return self._run_unrolled(x, skip_features)
    if self.config.scan_blocks:
      return self._run_scanned(x, skip_features)
    if stacking.STACKED_BLOCKS in self.variables['params']:
      raise ValueError(
          'Stacked block parameters need scan_blocks=True; convert them with '
          'dcsfn_jax.models.unstack_blocks to run the unrolled model.')
    return self._run_unrolled(x, skip_features)

  def _run_unrolled(self, x, skip_features):
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
            conv_impl=resolved_conv_impl(config),
            dtype=jnp.dtype(config.dtype), name=f'conv1x1_{i}')(
                jnp.concatenate(concatenated, axis=-1)))
      else:
        out = block_output
    return out, jnp.stack(block_outputs)

  def _run_scanned(self, x, skip_features):
    config = self.config
    params = dict(self.variables['params'])
    if stacking.STACKED_BLOCKS not in params:
      params = stacking.stack_blocks(params)
    block_params = params[stacking.STACKED_BLOCKS]
    block = InnerScaleConnectionBlock(config)
    apply_block = lambda p, h: block.apply({'params': p}, h)
    if config.dense_connection:
      return dense_scan.dense_scan(
          apply_block, config.remat is False, jnp.dtype(config.dtype), x,
          block_params, params[stacking.DENSE_FUSION], skip_features)

    run_block = apply_block
    if config.remat is not False:
      # The backward pass recomputes each block's internals instead of
      # keeping them for all L steps.
      run_block = jax.checkpoint(apply_block, prevent_cse=False)
    steps = jnp.arange(config.num_blocks)

    def body(out, inputs):
      p, skip, _ = inputs
      t = run_block(p, out if skip_features is None else out + skip)
      return t, t

    skips = skip_features if skip_features is not None else steps
    out, block_outputs = jax.lax.scan(body, x, (block_params, skips, steps))
    return out, block_outputs


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
