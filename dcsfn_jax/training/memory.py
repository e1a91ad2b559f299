"""How much memory the training step's activations take, and remat by it.

The backward pass needs what the forward pass computed. Without
rematerialisation the scanned blocks keep all their internals for all L
steps; with it they keep only each block's input and recompute the rest
(`models.dense_scan`): about 5x less memory for one more forward pass of
the blocks. config.model.remat = 'auto' chooses by the estimate below against
config.remat_budget_gb on accelerators, and rematerialises on CPU hosts.
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.training import state as state_lib


def activation_bytes(config, images_per_device, platform):
  """Bytes autodiff keeps from the forward pass for the backward pass of one
  device's micro-batch of config.patch_size^2 patches, for config.model
  resolved for `platform` (remat True, False or 'auto' = True).

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

  return sum(leaf.size * leaf.dtype.itemsize
             for leaf in jax.tree.leaves(jax.eval_shape(residuals, images)))


def images_per_device(config, device_count):
  """Images one device holds activations for at a time: its share of one
  micro-batch."""
  return max(1, config.batch_size // device_count // config.grad_accum_steps)


def resolve_remat(config, devices):
  """config.model resolved for the platform of `devices` (conv_impl, and
  remat by the rule below), and the remat choice's reason, one line.

  On accelerators 'auto' remat is False (keep the activations: no
  recompute) when the step's estimated activation memory per device without
  remat fits config.remat_budget_gb, else True. On CPU hosts it is True:
  there the step is bound by memory traffic, so keeping the activations
  saves no time and doubles the memory (benchmarks/RESULTS.md). An explicit
  True or False is kept.

  Args:
    config: the training config.
    devices: the devices the step runs on, e.g. its mesh's devices.flat.

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
  remat = estimate > config.remat_budget_gb * 1e9
  verdict = ('above it: rematerialising the blocks' if remat
             else 'within it: keeping them, no remat')
  return resolved(remat=remat), (
      f'remat=auto: the step\'s activations without remat take about '
      f'{estimate / 1e9:.2f} GB per device, budget '
      f'--config.remat_budget_gb={config.remat_budget_gb:g}; {verdict}')
