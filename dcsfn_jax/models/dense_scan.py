"""The dense connection of L blocks as one scan, with a hand-written VJP.

Block k of a dense stack reads out_{k-1} (+ skip_k) and writes t_k; its
fusion conv1x1_k reads concat(x, t_0, ..., t_k) and gives
out_k = LReLU(z_k). The scan carries that concatenation as one buffer
F = [x, t_0, ..., t_{L-1}] (zeros until written), so step k reads F once:
z_k = F @ K_k + b_k, with K_k conv1x1_k's rows, zero below its inputs.

Autodiff through that scan would keep F at every step (L copies). The VJP
here keeps F once, at its end, and mirrors the forward pass: the reverse
scan carries G = [dz_0, ..., dz_{L-1}] (zeros until written), so that
dt_k = G @ (every fusion's rows that read t_k) is one product too, and the
fusion kernels' gradient is one product of the final F and G. Each block's
own VJP is recomputed from its input (rematerialisation), or, with
`keep_activations`, taken from the forward pass.

A partial-sum accumulator (one running sum per later fusion, whose
gradient needs only t_k) would read and write L partial sums at every step;
this scan reads F once per step, and its backward pass writes nothing wide
per step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dcsfn_jax.models import layers


def _fusion_kernels(fusion, dtype):
  """[L, (L + 1) C, C]: block k's conv1x1 rows for F = [x, t_0, ...]."""
  # input_kernel [C, L, C], step_kernel [L, C, L, C] -> [L + 1, C, L, C].
  kernels = jnp.concatenate([fusion['input_kernel'][None],
                             fusion['step_kernel']])
  count, channels = kernels.shape[2], kernels.shape[3]
  return jnp.moveaxis(kernels, 2, 0).reshape(
      count, (count + 1) * channels, channels).astype(dtype)


def _forward(apply_block, keep_activations, dtype, x, block_params, fusion,
             skip_features):
  """(out, block outputs [L, ...]) and what the VJP needs: `dense_scan`'s
  forward rule."""
  kernels = _fusion_kernels(fusion, dtype)
  accumulate = layers.accumulation_dtype(dtype)
  count, channels = fusion['bias'].shape
  features = jnp.zeros(x.shape[:-1] + ((count + 1) * channels,), dtype)
  features = jax.lax.dynamic_update_slice_in_dim(features, x, 0, axis=-1)
  steps = jnp.arange(count)
  skips = steps if skip_features is None else skip_features

  def body(carry, inputs):
    out, features = carry
    params, kernel, bias, skip, step = inputs
    block_input = out if skip_features is None else out + skip
    if keep_activations:
      t, block_vjp = jax.vjp(apply_block, params, block_input)
    else:
      t, block_vjp = apply_block(params, block_input), None
    features = jax.lax.dynamic_update_slice_in_dim(
        features, t.astype(dtype), (step + 1) * channels, axis=-1)
    fused = jnp.einsum('bhwj,jd->bhwd', features, kernel,
                       preferred_element_type=accumulate) + bias
    return ((layers.leaky_relu(fused).astype(dtype), features),
            (t, out, block_vjp))

  (out, features), (block_outputs, previous_outs, block_vjps) = jax.lax.scan(
      body, (x, features),
      (block_params, kernels, fusion['bias'], skips, steps))
  saved = (block_params, fusion, skip_features, features, previous_outs, out,
           block_vjps)
  return (out, block_outputs), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def dense_scan(apply_block, keep_activations, dtype, x, block_params, fusion,
               skip_features):
  """The dense stack's blocks and fusions.

  Args:
    apply_block: (block params, [B, H, W, C]) -> t [B, H, W, C].
    keep_activations: keep each block's activations for the backward pass
      (config.remat False) instead of recomputing them.
    dtype: the compute dtype; the fusions accumulate in
      `layers.accumulation_dtype(dtype)`.
    x: the stack input [B, H, W, C].
    block_params: the blocks' parameters stacked on a leading axis L.
    fusion: {'input_kernel' [C, L, C], 'step_kernel' [L, C, L, C] (zero
      where block s comes after block k), 'bias' [L, C]} (`stacking`).
    skip_features: [L, B, H, W, C] added to each block's input, or None.

  Returns:
    (out [B, H, W, C], block outputs t [L, B, H, W, C]).
  """
  return _forward(apply_block, False, dtype, x, block_params, fusion,
                  skip_features)[0]


def _dense_scan_bwd(apply_block, keep_activations, dtype, saved, cotangents):
  del keep_activations  # block_vjps is None unless they were kept
  (block_params, fusion, skip_features, features, previous_outs, last_out,
   block_vjps) = saved
  grad_out, grad_block_outputs = cotangents
  count, channels = fusion['bias'].shape
  accumulate = layers.accumulation_dtype(dtype)
  kernels = _fusion_kernels(fusion, dtype).reshape(count, count + 1,
                                                   channels, channels)
  # reads[j]: every block's rows that read F's slot j, [L C (k, d), C].
  reads = jnp.transpose(kernels, (1, 0, 3, 2)).reshape(
      count + 1, count * channels, channels)
  outs = jnp.concatenate([previous_outs[1:], last_out[None]])  # out_k
  steps = jnp.arange(count)
  skips = steps if skip_features is None else skip_features
  # G: dz_k for the blocks done so far (zeros_like keeps a shard_map's
  # varying type).
  grads_z = jnp.zeros_like(features[..., channels:], dtype=accumulate)

  def body(carry, inputs):
    grad_out, grads_z = carry
    params, out, previous_out, skip, grad_t, read, step, block_vjp = inputs
    grad_z = jnp.where(out >= 0, grad_out,
                       layers.LEAKY_SLOPE * grad_out).astype(accumulate)
    grads_z = jax.lax.dynamic_update_slice_in_dim(
        grads_z, grad_z, step * channels, axis=-1)
    grad_t = grad_t + jnp.einsum('bhwz,zc->bhwc', grads_z, read,
                                 preferred_element_type=accumulate)
    if block_vjp is None:
      block_input = (previous_out if skip_features is None
                     else previous_out + skip)
      _, block_vjp = jax.vjp(apply_block, params, block_input)
    grad_params, grad_input = block_vjp(grad_t.astype(dtype))
    return (grad_input, grads_z), (grad_params, grad_input)

  (grad_x, grads_z), (grad_block_params, grad_inputs) = jax.lax.scan(
      body, (grad_out, grads_z),
      (block_params, outs, previous_outs, skips, grad_block_outputs,
       reads[1:], steps, block_vjps), reverse=True)
  grad_x = grad_x + jnp.einsum('bhwz,zc->bhwc', grads_z, reads[0],
                               preferred_element_type=accumulate)
  per_block = grads_z.reshape(grads_z.shape[:-1] + (count, channels))
  slots = features.reshape(features.shape[:-1] + (count + 1, channels))
  # dK[k, j] = F_j^T dz_k, kept where block k reads slot j (j <= k + 1):
  # the structural zeros of step_kernel get exactly zero gradient.
  grad_kernels = jnp.einsum('bhwjc,bhwkd->kjcd', slots.astype(accumulate),
                            per_block)
  reads_slot = steps[:, None] + 1 >= jnp.arange(count + 1)[None, :]
  grad_kernels = jnp.where(reads_slot[:, :, None, None], grad_kernels, 0.0)
  grad_fusion = {
      'input_kernel': jnp.transpose(grad_kernels[:, 0], (1, 0, 2)),
      'step_kernel': jnp.transpose(grad_kernels[:, 1:], (1, 2, 0, 3)),
      'bias': jnp.sum(per_block, axis=(0, 1, 2))}
  grad_fusion = {name: grad.astype(fusion[name].dtype)
                 for name, grad in grad_fusion.items()}
  grad_skips = None if skip_features is None else grad_inputs.astype(
      skip_features.dtype)
  return (grad_x.astype(features.dtype), grad_block_params, grad_fusion,
          grad_skips)


dense_scan.defvjp(_forward, _dense_scan_bwd)
