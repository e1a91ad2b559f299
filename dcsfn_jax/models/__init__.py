"""DCSFN in Flax linen: presets, config validation and the model factory.

  config = preset('official')            # or 'paper'; edit fields for ablations
  # The 'auto' fields resolved for the devices the model runs on:
  platform = platforms.platform_of(devices)
  model = build_model(platforms.resolve_model_config(config, platform))
  params = init_params(model, rng)   # fast; model.init(rng, images) also works
  derained = model.apply({'params': params}, images)          # O - R
  # Also runs on runtime_layout(params, config): blocks stacked, compiles faster.
  rain = model.apply({'params': params}, images, method='rain_estimate')

(`platforms` is dcsfn_jax.platforms.) See dcsfn_jax.models.dcsfn for sizes,
channel order and intermediate features.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dcsfn_jax.models import layers
from dcsfn_jax.models.config import IMPLEMENTATION_FIELDS, PRESETS, complete, preset, replaced, validate
from dcsfn_jax.models.config import validate_resolved
from dcsfn_jax.models.dcsfn import DCSFN, minimum_size
from dcsfn_jax.models.initialization import init_params
from dcsfn_jax.models.stacking import runtime_layout, stack_blocks, unstack_blocks

__all__ = ['DCSFN', 'IMPLEMENTATION_FIELDS', 'PRESETS', 'build_model', 'complete', 'init_params',
           'minimum_size', 'preset', 'replaced',
           'runtime_layout', 'stack_blocks', 'unstack_blocks',
           'validate']

# Model config fields that are DCSFN fields as they are.
_DIRECT_FIELDS = ('channels', 'num_blocks', 'num_scales', 'convs_per_scale',
                  'conv_groups', 'inner_scale_connection', 'dense_connection',
                  'skip_connection', 'cross_scale', 'single', 'recurrent_unit',
                  'channel_order', 'scan_blocks', 'remat')


def build_model(model_config) -> DCSFN:
  """DCSFN for a model config (a preset, possibly edited) whose conv_impl
  and remat are resolved ('auto' is refused: see dcsfn_jax.platforms).

  Raises:
    ValueError: naming the field, for an invalid or unresolved config.
  """
  validate_resolved(model_config)
  if model_config.dtype == 'float64' and not jax.config.read('jax_enable_x64'):
    raise ValueError("dtype='float64' needs JAX's 64-bit mode: "
                     'JAX_ENABLE_X64=1, or `with jax.enable_x64(True):`.')
  return DCSFN(**{field: model_config[field] for field in _DIRECT_FIELDS},
               dtype=jnp.dtype(model_config.dtype),
               conv=layers.CONVS[model_config.conv_impl])
