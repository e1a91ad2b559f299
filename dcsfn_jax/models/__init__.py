"""DCSFN in Flax linen: presets, config validation and the model factory.

  config = preset('official')            # or 'paper'; edit fields for ablations
  model = build_model(config)
  params = init_params(model, rng)   # fast; model.init(rng, images) also works
  derained = model.apply({'params': params}, images)          # O - R
  # Also runs on runtime_layout(params, config): blocks stacked, compiles faster.
  rain = model.apply({'params': params}, images, method='rain_estimate')

See dcsfn_jax.models.dcsfn for sizes, channel order and intermediate features.
"""
from __future__ import annotations

import flax.linen as nn
import ml_collections

from dcsfn_jax.models.config import IMPLEMENTATION_FIELDS, PRESETS, complete, preset, replaced, validate
from dcsfn_jax.models.dcsfn import DCSFN, minimum_size
from dcsfn_jax.models.initialization import init_params
from dcsfn_jax.models.stacking import runtime_layout, stack_blocks, unstack_blocks

__all__ = ['DCSFN', 'IMPLEMENTATION_FIELDS', 'PRESETS', 'build_model', 'complete', 'init_params',
           'minimum_size', 'preset', 'replaced',
           'runtime_layout', 'stack_blocks', 'unstack_blocks',
           'validate']


def build_model(model_config) -> nn.Module:
  """Validates `model_config` (a preset, possibly edited) and returns DCSFN."""
  validate(model_config)
  return DCSFN(ml_collections.FrozenConfigDict(model_config))
