"""Model configurations: the two presets and validation.

'official' reproduces the released PyTorch code (settings.py); 'paper' follows
the text of the DCSFN paper (ACM MM 2020, §3 and §4.2). Every config has every
field, so ablations are one-field edits of a preset.
"""
from __future__ import annotations

from absl import logging
import ml_collections

PRESETS = ('official', 'paper')
# Fields that choose how the network computes, not its parameters: a run may
# resume or fine-tune with other values of these.
IMPLEMENTATION_FIELDS = ('dtype', 'scan_blocks', 'conv_impl', 'remat')
RECURRENT_UNITS = ('GRU', 'LSTM', 'RNN', 'Conv')
CHANNEL_ORDERS = ('rgb', 'bgr')
# float64 is for checking against float64 references on CPU (JAX x64 only).
DTYPES = ('float32', 'bfloat16', 'float64')
CONV_IMPLS = ('auto', 'xla', 'cpu')
REMAT_CHOICES = ('auto', True, False)


def _base() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.channels = 20
  config.num_blocks = 16            # L: inner-scale blocks per encoder/decoder.
  config.num_scales = 4             # ICB scales; pools 1, 2, 4, 8.
  config.convs_per_scale = 4
  config.conv_groups = 1            # feature_group_count of the per-scale 3x3 convs.
  config.inner_scale_connection = True
  config.dense_connection = True    # False: ablation M1.
  config.skip_connection = True     # False: ablation M2.
  config.cross_scale = True         # False: no recurrent cells / cross-scale fusion.
  config.single = False             # True: ablation M3, one encoder/decoder at x1.
  config.recurrent_unit = 'GRU'
  config.channel_order = 'rgb'      # 'bgr' for the released weights.
  config.dtype = 'float32'          # compute dtype; parameters stay float32.
  # Run the L blocks of each encoder/decoder as one lax.scan over parameters
  # stacked from the per-block ones (same names, same numbers): compiles in
  # seconds instead of minutes.
  config.scan_blocks = True
  # Whether the scanned blocks' backward pass recomputes their internals
  # (True) or keeps them from the forward pass (False: no recompute, about
  # 5x the activation memory). Unrolled blocks never recompute. 'auto' names
  # no choice yet: the caller resolves it before build_model
  # (`dcsfn_jax.platforms`; the trainer by config.remat_budget_gb on
  # accelerators, True on CPU hosts).
  config.remat = ml_collections.FieldReference('auto', field_type=object)
  # How convs and their gradients are computed; same parameters, same values
  # up to float rounding. 'xla': lax.conv_general_dilated, autodiff's
  # gradients; 'cpu': dcsfn_jax.models.cpu_conv, whose gradients XLA:CPU runs
  # fast inside the block scan (it runs transposed-layout conv gradients
  # slowly inside loops). 'auto' names no choice yet: the caller resolves it
  # for the platform the model will run on, 'cpu' there if it is a CPU, else
  # 'xla' (`dcsfn_jax.platforms.resolve_model_config`). The choice is made
  # from the target devices rather than when tracing, because a program may
  # be lowered for another platform than the host's.
  config.conv_impl = 'auto'
  return config


def preset(name: str) -> ml_collections.ConfigDict:
  """Returns a fresh model config for `name`, one of PRESETS."""
  config = _base()
  if name == 'official':
    pass
  elif name == 'paper':
    config.channels = 32
    config.num_scales = 3
    config.convs_per_scale = 1
    config.conv_groups = 4
  else:
    raise ValueError(
        f'Unknown model preset {name!r}; choose one of '
        f'{", ".join(map(repr, PRESETS))}.')
  return config


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f'Invalid model config: {message}')


def validate(config) -> None:
  """Raises ValueError naming the offending field when `config` is unusable."""
  expected = set(_base().keys())
  present = set(config.keys())
  _require(not expected - present,
           f'missing field(s) {sorted(expected - present)}; start from '
           "dcsfn_jax.models.preset('official') or preset('paper').")
  _require(not present - expected,
           f'unknown field(s) {sorted(present - expected)}; valid fields are '
           f'{sorted(expected)}.')
  for field in ('channels', 'num_blocks', 'num_scales', 'convs_per_scale',
                'conv_groups'):
    value = config[field]
    _require(isinstance(value, int) and not isinstance(value, bool)
             and value >= 1, f'{field}={value!r} must be a positive integer.')
  _require(config.num_scales <= 4,
           f'num_scales={config.num_scales} must be 1, 2, 3 or 4.')
  _require(config.channels % config.conv_groups == 0,
           f'channels={config.channels} must be divisible by '
           f'conv_groups={config.conv_groups}.')
  for field in ('inner_scale_connection', 'dense_connection',
                'skip_connection', 'cross_scale', 'single', 'scan_blocks'):
    _require(isinstance(config[field], bool),
             f'{field}={config[field]!r} must be True or False.')
  _require(config.recurrent_unit in RECURRENT_UNITS,
           f'recurrent_unit={config.recurrent_unit!r} must be one of '
           f'{RECURRENT_UNITS}.')
  _require(config.channel_order in CHANNEL_ORDERS,
           f'channel_order={config.channel_order!r} must be one of '
           f'{CHANNEL_ORDERS}.')
  _require(config.dtype in DTYPES,
           f'dtype={config.dtype!r} must be one of {DTYPES}.')
  _require(config.conv_impl in CONV_IMPLS,
           f'conv_impl={config.conv_impl!r} must be one of {CONV_IMPLS}.')
  _require(config.remat == 'auto' or isinstance(config.remat, bool),
           f'remat={config.remat!r} must be one of {REMAT_CHOICES}.')


def validate_resolved(config) -> None:
  """validate(), and raises ValueError unless conv_impl and remat are chosen
  ('auto' resolved for the target platform)."""
  validate(config)
  auto = [field for field in ('conv_impl', 'remat') if config[field] == 'auto']
  _require(not auto,
           f"{' and '.join(f'{field}=auto' for field in auto)} must be "
           'resolved for the target platform before build_model: pass the '
           'config through dcsfn_jax.platforms.resolve_model_config(config, '
           'platforms.platform_of(devices)).')


def replaced(config, **fields) -> ml_collections.ConfigDict:
  """A copy of the model config with `fields` set, of any type ('auto' ->
  True for remat; a ConfigDict would refuse the type change in place)."""
  values = config.to_dict()
  values.update(fields)
  return ml_collections.ConfigDict(values)


def complete(saved, source) -> ml_collections.ConfigDict:
  """A saved model config (dict) with the fields it predates filled in.

  A checkpoint written before a field existed lacks it: each missing field
  takes its value from the preset closest to the saved fields, and is logged.
  Fields this version does not know are an error naming `source`.
  """
  config = ml_collections.ConfigDict(saved)
  presets = {name: preset(name) for name in PRESETS}
  unknown = sorted(set(config.keys()) - set(_base().keys()))
  if unknown:
    raise ValueError(
        f'{source}: the saved model config has field(s) {unknown} that this '
        'dcsfn_jax does not know; it was written by a newer or modified '
        'version.')
  closest = max(presets, key=lambda name: sum(
      presets[name][field] == value for field, value in config.items()))
  missing = {field: presets[closest][field]
             for field in presets[closest].keys() if field not in config}
  if missing:
    logging.warning(
        '%s predates model-config field(s) %s; using the %r preset\'s '
        'values %s.', source, sorted(missing), closest, missing)
    for field, value in missing.items():
      config[field] = value
  return config
