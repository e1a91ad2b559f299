"""How much memory the training step's activations take, and remat by it.

The backward pass needs what the forward pass computed. Without
rematerialisation the scanned blocks keep all their internals for all L
steps; with it they keep only each block's input and recompute the rest
(`models.dense_scan`): about 5x less memory for one more forward pass of
the blocks. config.model.remat = 'auto' chooses by the estimate below against
config.remat_budget_gb (at most half the device's memory) on accelerators,
and rematerialises on CPU hosts.

On TPU the estimate counts the memory layout: XLA:TPU tiles an array's two
minor dimensions by 8 (16 for 2-byte, 32 for 1-byte types) x 128 lanes, so
an NHWC activation of 20 channels takes 128 lanes. Compiled for a v5e chip,
the official step's temporaries at 16 patches per device were 15.9 GB
against 4.0 GB estimated without the tiling (benchmarks/RESULTS.md).
"""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.training import state as state_lib


def _tpu_tiled_bytes(shape, itemsize):
  """Bytes of an array of `shape` in XLA:TPU's tiled layout: the minor
  dimension padded to 128 lanes, the second-minor to 8 rows of 32 bits."""
  if len(shape) < 2:
    return math.prod(shape) * itemsize
  rows = 8 * max(1, 4 // itemsize)
  return (math.prod(shape[:-2]) * -(-shape[-2] // rows) * rows
          * -(-shape[-1] // 128) * 128 * itemsize)


def activation_bytes(config, images_per_device, platform):
  """Bytes autodiff keeps from the forward pass for the backward pass of one
  device's micro-batch of config.patch_size^2 patches, for config.model
  resolved for `platform` (remat True, False or 'auto' = True); on 'tpu' in
  its tiled layout.

  Traced only (`jax.eval_shape` of the VJP's residuals): nothing is compiled
  or allocated. XLA's temporaries of the backward pass come on top.
  """
  model_config = platforms.resolve_model_config(config.model, platform)
  model = models.build_model(model_config)
  patch = config.patch_size
  images = jax.ShapeDtypeStruct((images_per_device, patch, patch, 3),
                                jnp.float32)

  def residuals(images):
    params = models.runtime_layout(
        model.init(jax.random.key(0), images[:1])['params'], model_config)
    loss = functools.partial(state_lib.loss_fn, model=model, config=config)
    _, backward = jax.vjp(
        lambda p: loss(p, {'rainy': images, 'clean': images})[0], params)
    return backward

  leaves = jax.tree.leaves(jax.eval_shape(residuals, images))
  if platform == 'tpu':
    return sum(_tpu_tiled_bytes(leaf.shape, leaf.dtype.itemsize)
               for leaf in leaves)
  return sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)


def device_memory_bytes(devices):
  """The memory one of `devices` offers (its runtime's bytes_limit), or None
  where the runtime does not say (CPU, compile-only devices)."""
  try:
    stats = list(devices)[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # a backend without them
    return None
  return (stats or {}).get('bytes_limit')


def images_per_device(config, device_count):
  """Images one device holds activations for at a time: its share of one
  micro-batch."""
  return max(1, config.batch_size // device_count // config.grad_accum_steps)


def resolve_remat(config, devices, memory_bytes=None):
  """config.model resolved for the platform of `devices` (conv_impl, and
  remat by the rule below), and the remat choice's reason, one line.

  On accelerators 'auto' remat is False (keep the activations: no
  recompute) when the step's estimated activation memory per device without
  remat fits the budget, config.remat_budget_gb or half the device's memory
  if that is less, else True. On CPU hosts it is True:
  there the step is bound by memory traffic, so keeping the activations
  saves no time and doubles the memory (benchmarks/RESULTS.md). An explicit
  True or False is kept.

  Args:
    config: the training config.
    devices: the devices the step runs on, e.g. its mesh's devices.flat.
    memory_bytes: one device's memory (default: as its runtime reports it;
      compile-only devices report none, so `dcsfn_jax.compilation` passes
      the target's).

  Returns:
    (model config, message).
  """
  devices = list(devices)
  platform = platforms.platform_of(devices)
  resolved = functools.partial(platforms.resolve_model_config, config.model,
                               platform)
  if config.model.remat != 'auto':
    return resolved(), f'remat={config.model.remat} (as configured)'
  if platform == 'cpu':
    return resolved(remat=True), (
        'remat=auto on CPU: rematerialising the blocks (on CPU hosts '
        'keeping their activations is no faster and takes twice the '
        'memory)')
  probe = ml_collections.ConfigDict(config.to_dict())
  probe.model = models.replaced(config.model, remat=False)
  estimate = activation_bytes(probe, images_per_device(config, len(devices)),
                              platform)
  budget = config.remat_budget_gb * 1e9
  budget_text = f'--config.remat_budget_gb={config.remat_budget_gb:g}'
  memory_bytes = memory_bytes or device_memory_bytes(devices)
  if memory_bytes and memory_bytes / 2 < budget:
    budget = memory_bytes / 2
    budget_text = f'half the device\'s {memory_bytes / 1e9:.1f} GB'
  remat = estimate > budget
  verdict = ('above it: rematerialising the blocks' if remat
             else 'within it: keeping them, no remat')
  return resolved(remat=remat), (
      f'remat=auto: the step\'s activations without remat take about '
      f'{estimate / 1e9:.2f} GB per device, budget {budget_text}; '
      f'{verdict}')
