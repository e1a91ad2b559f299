"""Dense encoder and decoder of inner-scale blocks (paper §3.3; REFERENCE §2.2).

Parameters are per block (block_{i}, conv1x1_{i}), matching the released
state_dict, or stacked (`stacking.stack_blocks`; what the trainer holds).
With `scan_blocks` (the default) the forward pass stacks them if needed and
runs the blocks as one `lax.scan`, its body rematerialised unless
config.remat is False. The dense connection is scanned exactly in one of two
ways, chosen by a custom VJP:
  inference  the carry is concat(x, t_0, ..., t_{L-1}), zeros until written,
             and block k's fusion one product with conv1x1_k's rows, as the
             released code computes it; each step reads the carry once;
  autodiff   the carry holds, for every block k, the partial sum of
             conv1x1_k's inputs seen so far: step s adds t_s's share to all
             k >= s with one C -> L*C product whose weights for k < s are zero
             (dense_fusion/step_kernel). Its gradient needs only each step's
             t_s, where the concatenation's would keep the whole carry for
             every step; reading and writing the partial sums made it ~30% of
             the forward pass on CPU (benchmarks/RESULTS.md, 2026-12-01).
Both compile in seconds; the unrolled graph (used by `model.init` and with
scan_blocks=False) takes minutes for the official preset.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dcsfn_jax.models import cpu_conv
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
    num_blocks = config.num_blocks
    params = dict(self.variables['params'])
    if stacking.STACKED_BLOCKS not in params:
      params = stacking.stack_blocks(params)
    block_params = params[stacking.STACKED_BLOCKS]
    block = InnerScaleConnectionBlock(config)
    run_block = lambda p, h: block.apply({'params': p}, h)
    if config.remat is not False:
      # The backward pass recomputes each block's internals instead of
      # keeping them for all L steps.
      run_block = jax.checkpoint(run_block, prevent_cse=False)
    steps = jnp.arange(num_blocks)
    skips = skip_features if skip_features is not None else steps

    if not config.dense_connection:
      def body(out, inputs):
        p, skip, _ = inputs
        t = run_block(p, out if skip_features is None else out + skip)
        return t, t

      out, block_outputs = jax.lax.scan(body, x, (block_params, skips, steps))
      return out, block_outputs

    fusion = params[stacking.DENSE_FUSION]
    dtype = jnp.dtype(config.dtype)
    channels = config.channels
    if resolved_conv_impl(config) == 'cpu':
      fuse = cpu_conv.pointwise
    else:
      fuse = functools.partial(jnp.einsum, 'bhwc,ckd->bhwkd',
                               preferred_element_type=jnp.float32)

    def by_partial_sums(x, block_params, fusion, skip_features):
      """What gradients are taken through: the carry is, for every block k,
      the partial sum of conv1x1_k's inputs seen so far, float32 [B, H, W,
      L, C]; its gradient needs only each step's block output."""
      partial_sums = fuse(x, fusion['input_kernel'].astype(dtype)) + (
          fusion['bias'])

      def body(carry, inputs):
        out, partial_sums = carry
        p, weights, skip, step = inputs
        t = run_block(p, out if skip_features is None else out + skip)
        partial_sums = partial_sums + fuse(t, weights.astype(dtype))
        out = layers.leaky_relu(jax.lax.dynamic_index_in_dim(
            partial_sums, step, axis=3, keepdims=False)).astype(dtype)
        return (out, partial_sums), t

      skips = steps if skip_features is None else skip_features
      (out, _), block_outputs = jax.lax.scan(
          body, (x, partial_sums),
          (block_params, fusion['step_kernel'], skips, steps))
      return out, block_outputs

    def by_concatenation(x, block_params, fusion, skip_features):
      """The same values as the released code computes them: the carry is
      concat(x, t_0, ..., t_{L-1}) [B, H, W, (L+1) C], zeros until written,
      and block k's fusion is one product with conv1x1_k's rows. Each step
      reads the carry once instead of reading and writing the partial sums,
      but a gradient through it would keep the whole carry for every step,
      so it runs only where nothing is differentiated."""
      # [L + 1 (inputs j), C, L (blocks k), C] -> [k, (j, c), d].
      kernels = jnp.concatenate([fusion['input_kernel'][None],
                                 fusion['step_kernel']])
      kernels = jnp.moveaxis(kernels, 2, 0).reshape(
          num_blocks, (num_blocks + 1) * channels, channels)
      features = jnp.zeros(x.shape[:-1] + ((num_blocks + 1) * channels,),
                           dtype)
      features = jax.lax.dynamic_update_slice_in_dim(features, x, 0, axis=-1)

      def body(carry, inputs):
        out, features = carry
        p, kernel, bias, skip, step = inputs
        t = run_block(p, out if skip_features is None else out + skip)
        features = jax.lax.dynamic_update_slice_in_dim(
            features, t.astype(dtype), (step + 1) * channels, axis=-1)
        fused = jnp.einsum('bhwj,jd->bhwd', features, kernel.astype(dtype),
                           preferred_element_type=jnp.float32) + bias
        return (layers.leaky_relu(fused).astype(dtype), features), t

      skips = steps if skip_features is None else skip_features
      (out, _), block_outputs = jax.lax.scan(
          body, (x, features),
          (block_params, kernels, fusion['bias'], skips, steps))
      return out, block_outputs

    # Inference runs by_concatenation; differentiation takes by_partial_sums'
    # forward and backward (same values up to float rounding).
    dense_scan = jax.custom_vjp(by_concatenation)
    dense_scan.defvjp(lambda *args: jax.vjp(by_partial_sums, *args),
                      lambda backward, grads: backward(grads))
    return dense_scan(x, block_params, fusion, skip_features)


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
