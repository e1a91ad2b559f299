"""Flax params <-> PyTorch state_dicts keyed like the released DCSFN module.

Both directions work on numpy and never import torch: torch tensors given to
`from_torch_state_dict` are read through their `.detach()`/`.numpy()` methods.
Both count: every source tensor must be consumed and every target filled, or a
ValueError lists the missing keys, unexpected keys and shape mismatches. Before
any key name is built, the model config's structural fields are bounded
(`check_structure`) and the number of tensors is compared with the count the
config implies (`tensor_count`): a config needing more than `_LISTED_AT_MOST`
tensors that the file does not hold is refused by the counts alone, so a
small file cannot make the converter list millions of names.

Kernels are HWIO in Flax and OIHW in torch (grouped convs included); biases
are shared as is. No channel is flipped here: the weights keep the channel
order recorded in `model_config.channel_order`, and the Flax model flips its
RGB input at the boundary when that order is 'bgr'.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from dcsfn_jax.models import icb
from dcsfn_jax.models import stacking

# safetensors metadata entry holding the model config as JSON.
SAFETENSORS_CONFIG_KEY = 'dcsfn_model_config'
_CELL_CONVS = {
    'GRU': ('conv_xz', 'conv_xr', 'conv_xn', 'conv_hz', 'conv_hr', 'conv_hn'),
    'LSTM': ('conv_xf', 'conv_xi', 'conv_xo', 'conv_xj',
             'conv_hf', 'conv_hi', 'conv_ho', 'conv_hj'),
    'RNN': ('conv_x', 'conv_h'),
    'Conv': ('conv',),
}
# Convs a cell reads when it starts without state (REFERENCE §2.4).
_FIRST_CALL_CONVS = {
    'GRU': ('conv_xz', 'conv_xn'),
    'LSTM': ('conv_xi', 'conv_xo', 'conv_xj'),
    'RNN': ('conv_x',),
    'Conv': ('conv',),
}


# Largest value of each structural field a weights file may ask for: far
# above both presets (channels 20/32, 16 blocks, 4/1 convs per scale), far
# below the sizes whose key names alone fill the memory.
STRUCTURE_LIMITS = {'channels': 1024, 'num_blocks': 256, 'num_scales': 4,
                    'convs_per_scale': 64, 'conv_groups': 1024}


# Up to this many expected keys, a file with another tensor count gets the
# list of missing and unexpected keys; beyond it, only the two counts.
_LISTED_AT_MOST = 20_000


def check_structure(model_config) -> None:
  """Raises ValueError naming a structural field that is not an integer in
  [1, STRUCTURE_LIMITS[field]], or an unknown recurrent_unit."""
  for field, limit in STRUCTURE_LIMITS.items():
    value = model_config.get(field)
    if (isinstance(value, bool) or not isinstance(value, int)
        or not 1 <= value <= limit):
      raise ValueError(f'model config field {field}={value!r} must be an '
                       f'integer from 1 to {limit}.')
  unit = model_config.get('recurrent_unit')
  if unit not in _CELL_CONVS:
    raise ValueError(f'model config field recurrent_unit={unit!r} must be '
                     f'one of {tuple(_CELL_CONVS)}.')


def tensor_count(model_config) -> int:
  """How many tensors (weights and biases) the released-style state_dict of
  `model_config` holds; arithmetic, the same count as `_conv_table`'s."""
  check_structure(model_config)
  scales = model_config.num_scales
  per_block = scales * model_config.convs_per_scale + (scales > 1)
  if model_config.inner_scale_connection:
    per_block += scales - 1
  per_coder = model_config.num_blocks * (
      per_block + bool(model_config.dense_connection))
  if model_config.single:
    convs = 2 * per_coder
  else:
    convs = (6 * per_coder + 4 * bool(model_config.cross_scale)
             + 6 * len(_CELL_CONVS[model_config.recurrent_unit]))
  return 2 * (convs + 3)  # + convert, merge.0 and merge.2


@dataclasses.dataclass(frozen=True)
class _Conv:
  """One torch conv (`{torch_name}.weight`/`.bias`) and its Flax module path.

  flax_path is None for a conv the released module owns but never reads.
  """
  torch_name: str
  flax_path: Optional[tuple]
  weight_shape: tuple  # OIHW

  @property
  def bias_shape(self) -> tuple:
    return self.weight_shape[:1]


def _conv_table(model_config) -> list:
  """Every torch conv of the twin for `model_config`, in state_dict order."""
  c = model_config.channels
  pools = icb.SCALE_FACTORS[:model_config.num_scales]
  table = [_Conv('convert.0', ('convert',), (c, 3, 3, 3))]

  def coder(name):
    for i in range(model_config.num_blocks):
      block = f'{name}.units.{i}'
      for pool in pools:
        for j in range(model_config.convs_per_scale):
          table.append(_Conv(
              f'{block}.scale{pool}.{j}.0',
              (name, f'block_{i}', f'scale{pool}_conv_{j}'),
              (c, c // model_config.conv_groups, 3, 3)))
      if model_config.inner_scale_connection:
        for coarse, fine in ((8, 4), (4, 2), (2, 1)):
          if coarse in pools:
            fusion = f'fusion{coarse}{fine}'
            table.append(_Conv(f'{block}.{fusion}.0',
                               (name, f'block_{i}', fusion), (c, 2 * c, 1, 1)))
      if len(pools) > 1:
        table.append(_Conv(f'{block}.fusion_all.0',
                           (name, f'block_{i}', 'fusion_all'),
                           (c, len(pools) * c, 1, 1)))
    if model_config.dense_connection:
      for i in range(model_config.num_blocks):
        table.append(_Conv(f'{name}.conv1x1.{i}.0', (name, f'conv1x1_{i}'),
                           (c, (i + 2) * c, 1, 1)))

  if model_config.single:
    coder('encoder')
    coder('decoder')
    merge_channels = c
  else:
    unit = model_config.recurrent_unit
    cross = model_config.cross_scale
    for scale in (1, 2, 4):
      coder(f'encoder_scale{scale}')
    if cross:
      for fusion in ('fusion_1_2_1', 'fusion_1_2_2',
                     'fusion_2_2_1', 'fusion_2_2_2'):
        used = (unit == 'LSTM' or
                (unit in ('GRU', 'RNN') and fusion.endswith('_1')))
        table.append(_Conv(f'{fusion}.0', (fusion,) if used else None,
                           (c, 2 * c, 1, 1)))
    for scale in (1, 2, 4):
      coder(f'decoder_scale{scale}')
    for cell in ('rec1_1', 'rec1_2', 'rec1_4', 'rec2_1', 'rec2_2', 'rec2_4'):
      starts_without_state = cell in ('rec1_4', 'rec2_1') or unit == 'Conv'
      for conv in _CELL_CONVS[unit]:
        used = cross and (not starts_without_state or
                          conv in _FIRST_CALL_CONVS[unit])
        table.append(_Conv(f'{cell}.{conv}', (cell, conv) if used else None,
                           (c, c, 3, 3)))
    merge_channels = 3 * c
  table.append(_Conv('merge.0', ('merge_conv1x1',), (3, merge_channels, 1, 1)))
  table.append(_Conv('merge.2', ('merge_conv3x3',), (3, 3, 3, 3)))
  return table


def torch_state_dict_shapes(model_config) -> dict:
  """{state_dict key: shape} of the twin (and released module) for the config."""
  shapes = {}
  for conv in _conv_table(model_config):
    shapes[f'{conv.torch_name}.weight'] = conv.weight_shape
    shapes[f'{conv.torch_name}.bias'] = conv.bias_shape
  return shapes


def _flatten(tree: Mapping, prefix: tuple = ()) -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def _raise_if_any(what: str, missing: list, unexpected: list,
                  mismatched: list) -> None:
  if not (missing or unexpected or mismatched):
    return
  lines = [f'Cannot convert {what}:']
  for title, items in (('missing', missing), ('unexpected', unexpected),
                       ('shape/dtype mismatches', mismatched)):
    if items:
      shown = ', '.join(items[:20])
      more = f' ... and {len(items) - 20} more' if len(items) > 20 else ''
      lines.append(f'  {len(items)} {title}: {shown}{more}')
  lines.append('  Check that the model config (preset and switches such as '
               'num_scales, recurrent_unit, single) matches the weights.')
  raise ValueError('\n'.join(lines))


def to_torch_state_dict(params: Mapping, model_config,
                        dtype=np.float32) -> dict:
  """Flax params -> {released state_dict key: numpy array of `dtype`}.

  The result loads with `load_state_dict(..., strict=True)` into the twin
  (and the released module for the official preset). Tensors the released
  module owns but our model never uses (REFERENCE §2.5: in GRU mode
  fusion_1_2_2, fusion_2_2_2 and conv_{xr,hz,hr,hn} of rec1_4/rec2_1; every
  cell with cross_scale=False) are filled with zeros.

  Args:
    params: the model's params tree (a `{'params': ...}` wrapper is unwrapped),
      per-block or with the blocks stacked (`models.stack_blocks`).
    model_config: the model config the params were built with.
    dtype: of the arrays: float32, as the released weights; float64 keeps
      float64 gradients whole (tests/test_torch_parity.py).
  Raises:
    ValueError listing params that are missing, left over, or misshapen.
  """
  check_structure(model_config)
  if set(params) == {'params'}:
    params = params['params']
  params = stacking.unstack_blocks(dict(params))
  flat = {'/'.join(path): leaf for path, leaf in _flatten(params).items()}
  consumed = set()
  missing, mismatched = [], []
  state_dict = {}
  for conv in _conv_table(model_config):
    if conv.flax_path is None:
      state_dict[f'{conv.torch_name}.weight'] = np.zeros(conv.weight_shape,
                                                         dtype)
      state_dict[f'{conv.torch_name}.bias'] = np.zeros(conv.bias_shape, dtype)
      continue
    prefix = '/'.join(conv.flax_path)
    o, i, kh, kw = conv.weight_shape
    for leaf, expected, to_torch in (
        ('kernel', (kh, kw, i, o), lambda k: k.transpose(3, 2, 0, 1)),
        ('bias', conv.bias_shape, lambda b: b)):
      name = f'{prefix}/{leaf}'
      if name not in flat:
        missing.append(name)
        continue
      value = np.asarray(flat[name], dtype=dtype)
      consumed.add(name)
      if value.shape != expected:
        mismatched.append(f'{name} {value.shape} (expected {expected})')
        continue
      key = f"{conv.torch_name}.{'weight' if leaf == 'kernel' else 'bias'}"
      state_dict[key] = np.ascontiguousarray(to_torch(value))
  unexpected = sorted(set(flat) - consumed)
  _raise_if_any('Flax params to a torch state_dict', missing, unexpected,
                mismatched)
  return state_dict


def first_non_finite(state_dict: Mapping) -> Optional[str]:
  """The key of the first float tensor holding an inf or NaN, else None."""
  for key, value in state_dict.items():
    array = _as_numpy(value)
    if array is not None and not np.isfinite(array).all():
      return key
  return None


def _as_numpy(value: Any) -> Optional[np.ndarray]:
  """A float32 numpy copy of a torch tensor or array; None if not float."""
  if hasattr(value, 'detach'):  # a torch tensor; torch is never imported here
    if not value.is_floating_point():
      return None
    return value.detach().cpu().float().numpy()
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.floating):
    return None
  return array.astype(np.float32)


def unwrap_state_dict(checkpoint: Mapping) -> dict:
  """The state_dict inside a released checkpoint ({'net': ...}) or as given,
  with any DataParallel `module.` prefix removed."""
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f'Expected a state_dict (a mapping of tensor names), got '
                     f'{type(checkpoint).__name__}.')
  if 'net' in checkpoint and isinstance(checkpoint['net'], Mapping):
    checkpoint = checkpoint['net']
  return {(key[len('module.'):] if key.startswith('module.') else key): value
          for key, value in checkpoint.items()}


def from_torch_state_dict(state_dict: Mapping, model_config) -> dict:
  """A released-style state_dict -> Flax params (nested dict of numpy float32).

  Accepts torch tensors or numpy arrays, keys with a `module.` prefix, and a
  released checkpoint dict (its 'net' entry is used). Tensors the released
  module owns but never reads (see `to_torch_state_dict`) must be present and
  well shaped, and are then dropped whatever they hold: real checkpoints carry
  their random initial values, which the released forward pass never reads
  either.

  Raises:
    ValueError for a structural field out of bounds, or a tensor count other
    than the config's when that needs more than `_LISTED_AT_MOST` keys, else
    listing missing keys, unexpected keys and shape mismatches.
  """
  tensors = unwrap_state_dict(state_dict)
  needed = tensor_count(model_config)
  if len(tensors) != needed and needed > _LISTED_AT_MOST:
    fields = ', '.join(f'{field}={model_config[field]}'
                       for field in STRUCTURE_LIMITS)
    raise ValueError(f'it holds {len(tensors)} tensors, but its model config '
                     f'({fields}) needs {needed}.')
  expected = torch_state_dict_shapes(model_config)
  missing = [k for k in expected if k not in tensors]
  unexpected = sorted(k for k in tensors if k not in expected)
  mismatched = []
  arrays = {}
  for key in expected:
    if key not in tensors:
      continue
    array = _as_numpy(tensors[key])
    if array is None or array.shape != expected[key]:
      found = (f'{tuple(array.shape)}' if array is not None else
               f'non-float {getattr(tensors[key], "dtype", type(tensors[key]))}')
      mismatched.append(f'{key} {found} (expected {expected[key]})')
    else:
      arrays[key] = array
  _raise_if_any('the torch state_dict to Flax params', missing, unexpected,
                mismatched)

  params = {}
  consumed = filled = 0
  for conv in _conv_table(model_config):
    weight = arrays[f'{conv.torch_name}.weight']
    bias = arrays[f'{conv.torch_name}.bias']
    consumed += 2
    if conv.flax_path is None:
      continue
    node = params
    for part in conv.flax_path:
      node = node.setdefault(part, {})
    node['kernel'] = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    node['bias'] = bias
    filled += 2
  if consumed != len(tensors) or filled != len(_flatten(params)):
    raise AssertionError(f'Converter bookkeeping: consumed {consumed} of '
                         f'{len(tensors)} tensors, filled {filled} params.')
  return params
