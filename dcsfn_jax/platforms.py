"""The platform a program targets, and the model config resolved for it.

Two model config fields may say 'auto' (`dcsfn_jax.models.config`):
conv_impl, which depends on the platform the model runs on, and remat, which
matters to training only (the trainer chooses it by memory budget,
`training.memory`). The model never reads the platform; callers resolve
both here, once, before `models.build_model`:

  platform = platform_of(mesh.devices.flat)      # 'cpu', 'gpu' or 'tpu'
  model = models.build_model(resolve_model_config(model_config, platform))

The platform comes from the devices a program will run on: a mesh's
devices, or compile-only topology devices when lowering for an accelerator
from a CPU host. jax.default_backend() is not asked: it names the host's
default, which is the wrong answer when lowering for another platform.
"""
from __future__ import annotations

import ml_collections

from dcsfn_jax import models

# Platform names of jax devices that are one platform here.
_ALIASES = {'cuda': 'gpu', 'rocm': 'gpu'}


def platform_of(devices) -> str:
  """'cpu', 'gpu', 'tpu' (or another plugin's name) of `devices`, which must
  all be of one platform.

  Args:
    devices: jax devices (or anything with a `.platform`), e.g. a mesh's
      `devices.flat` or a topology's compile-only devices.

  Raises:
    ValueError: for no devices, or devices of more than one platform.
  """
  platforms = {_ALIASES.get(device.platform, device.platform)
               for device in devices}
  if not platforms:
    raise ValueError('No devices given: pass the devices the program runs '
                     'on, e.g. a mesh\'s devices.flat.')
  if len(platforms) > 1:
    raise ValueError(f'Devices of several platforms {sorted(platforms)}: a '
                     'program runs on one; pass the devices of one platform.')
  return platforms.pop()


def resolve_model_config(model_config, platform: str,
                         remat: bool = True) -> ml_collections.ConfigDict:
  """A copy of `model_config` with its 'auto' fields chosen for `platform`.

  conv_impl 'auto' becomes 'cpu' (`models.cpu_conv`, whose gradients
  XLA:CPU runs fast inside the block scan) on 'cpu', else 'xla'; remat
  'auto' becomes `remat`. Explicit values are kept.

  Args:
    model_config: a model config (`models.preset`, possibly edited).
    platform: from `platform_of`.
    remat: what 'auto' remat means for this caller; it only changes a
      training step's memory and time, never a forward pass.

  Raises:
    ValueError: for an invalid config, or a remat that is not a bool.
  """
  models.validate(model_config)
  if not isinstance(remat, bool):
    raise ValueError(f'remat={remat!r} must be True or False.')
  conv_impl = model_config.conv_impl
  if conv_impl == 'auto':
    conv_impl = 'cpu' if platform == 'cpu' else 'xla'
  return models.replaced(
      model_config, conv_impl=conv_impl,
      remat=remat if model_config.remat == 'auto' else model_config.remat)


def model_for(model_config, devices, *, remat: bool = True) -> models.DCSFN:
  """`models.build_model` of `model_config` resolved for the platform of
  `devices` (`platform_of`, `resolve_model_config`)."""
  return models.build_model(
      resolve_model_config(model_config, platform_of(devices), remat))
