"""Dense encoder and decoder of inner-scale blocks (paper §3.3; REFERENCE §2.2).

Parameters are per block (block_{i}, conv1x1_{i}), matching the released
state_dict, or stacked (`stacking.stack_blocks`; what the trainer holds).
With `scan_blocks` the forward pass stacks them if needed and runs the
blocks as one `lax.scan` (`dense_scan`, whose VJP recomputes each block's
internals unless `remat` is False); it compiles in seconds, where the
unrolled graph (used by `model.init` and without scan_blocks) takes minutes
for the official preset.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from dcsfn_jax.models import dense_scan
from dcsfn_jax.models import layers
from dcsfn_jax.models import stacking


class _DenseStack(nn.Module):
  """L blocks; with the dense connection, block i's output is fused with every
  earlier block output and the stack input by conv1x1_{i} ((i+2)C -> C, LReLU).

  Attributes:
    channels: C.
    num_blocks: L.
    dense_connection: fuse with conv1x1_{i} (False: block outputs chain).
    block: () -> the block module, [B, H, W, C] -> [B, H, W, C] (an
      `icb.InnerScaleConnectionBlock` with its fields bound).
    scan_blocks: run the blocks as one lax.scan over stacked parameters.
    remat: with scan_blocks, recompute each block's internals in the
      backward pass instead of keeping them.
    dtype: compute dtype; parameters are float32.
    conv: the conv factory of the fusions (`layers.ConvFactory`).
  """
  channels: int
  num_blocks: int
  dense_connection: bool
  block: Callable[..., nn.Module]
  scan_blocks: bool
  remat: bool
  dtype: DTypeLike
  conv: layers.ConvFactory

  def _run(self, x: jax.Array, skip_features: jax.Array | None):
    if self.is_initializing():
      return self._run_unrolled(x, skip_features)
    if self.scan_blocks:
      return self._run_scanned(x, skip_features)
    if stacking.STACKED_BLOCKS in self.variables['params']:
      raise ValueError(
          'Stacked block parameters need scan_blocks=True; convert them with '
          'dcsfn_jax.models.unstack_blocks to run the unrolled model.')
    return self._run_unrolled(x, skip_features)

  def _run_unrolled(self, x, skip_features):
    channels = self.channels
    concatenated = [x]
    out = x
    block_outputs = []
    for i in range(self.num_blocks):
      block_input = out if skip_features is None else out + skip_features[i]
      block_output = self.block(name=f'block_{i}')(block_input)
      block_outputs.append(block_output)
      if self.dense_connection:
        concatenated.append(block_output)
        out = layers.leaky_relu(self.conv(
            channels, 1, in_features=(i + 2) * channels, dtype=self.dtype,
            name=f'conv1x1_{i}')(jnp.concatenate(concatenated, axis=-1)))
      else:
        out = block_output
    return out, jnp.stack(block_outputs)

  def _run_scanned(self, x, skip_features):
    params = dict(self.variables['params'])
    if stacking.STACKED_BLOCKS not in params:
      params = stacking.stack_blocks(params)
    block_params = params[stacking.STACKED_BLOCKS]
    block = self.block()
    apply_block = lambda p, h: block.apply({'params': p}, h)
    if self.dense_connection:
      return dense_scan.dense_scan(
          apply_block, not self.remat, jnp.dtype(self.dtype), x,
          block_params, params[stacking.DENSE_FUSION], skip_features)

    run_block = apply_block
    if self.remat:
      # The backward pass recomputes each block's internals instead of
      # keeping them for all L steps.
      run_block = jax.checkpoint(apply_block, prevent_cse=False)
    steps = jnp.arange(self.num_blocks)

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
  without `skip_connection` it sees out alone.
  """
  skip_connection: bool

  @nn.compact
  def __call__(self, x: jax.Array, skip_features: jax.Array) -> jax.Array:
    out, _ = self._run(x, skip_features if self.skip_connection else None)
    return out
