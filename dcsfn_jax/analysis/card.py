"""A model card: parameters, arithmetic per image and training memory.

  params = abstract_params(config)          # shapes only (jax.eval_shape)
  parameter_counts(params)                  # {'total', 'per_module'}
  forward_cost(config, 256, 256)            # XLA FLOPs, MACs, ...
  train_memory(config, 16, 64, loss_fn)     # XLA memory analysis
  card = model_card(config, loss_fn=...)    # all of it, JSON-able
  to_markdown(card)

How each figure is counted
  FLOPs  XLA's HloCostAnalysis (`Lowered.cost_analysis`, before any
         optimisation) of the forward pass at batch 1 with scan_blocks=False,
         so every block is in the graph: XLA counts the body of a scan's while
         loop once, which makes the scanned graph's count meaningless as a
         cost. A multiply-add is 2 FLOPs, counted over the kernel taps that
         fall inside the image (not over zero padding); every elementwise op
         counts 1; exp/tanh/logistic are 'transcendentals', not FLOPs. Lowered
         for CPU with conv_impl='xla', so the count is the same on every
         machine.
  MACs   multiply-accumulates of every conv and matmul of the same graph,
         read from its jaxpr: output elements x kernel taps x input channels
         per group, zero padding included, as PyTorch counters (mmcv, thop)
         count them; bias adds and activations are not MACs.
  mmcv-style  what derain-toolbox's get_flops.py (mmcv's
         get_model_complexity_info) would count on this graph: MACs + one
         bias add per conv output + one per LeakyReLU output; its hooks see
         nn.Modules only, so functional ops (pooling, resizes, GRU gates,
         residual adds) count nothing.
  Memory XLA's memory analysis of the compiled value_and_grad of the loss
         for one batch on one default device, with the model config resolved
         for that device's platform ('auto' remat: True; scan_blocks=True:
         blocks in a rematerialised lax.scan). The optimiser's state and
         update are not included.

Pure computation: no I/O, nothing of training/ imported (the loss is given).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.models import stacking

# derain-toolbox configs/dcsfn/README.md, "Network Complexity": get_flops.py
# (mmcv) at input (3, 256, 256); GFLOPs (mmcv's name for its MAC-like count)
# and millions of parameters, per recurrent unit.
TOOLBOX_REFERENCE = {'GRU': (74.28, 6.45), 'LSTM': (75.33, 6.50),
                     'RNN': (72.55, 6.37)}
TOOLBOX_SIZE = (256, 256)
# Fields that change the architecture (the others change numerics or speed).
_ARCHITECTURE_FIELDS = ('channels', 'num_blocks', 'num_scales',
                        'convs_per_scale', 'conv_groups',
                        'inner_scale_connection', 'dense_connection',
                        'skip_connection', 'cross_scale', 'single')
# Top-level modules in data-flow order, for the parameter table.
_MODULE_ORDER = ('convert', 'encoder', 'rec1', 'rec2', 'fusion', 'decoder',
                 'merge')


def _model(model_config, platform, **changes):
  """(config, DCSFN): `model_config` with `changes`, resolved for
  `platform`."""
  config = ml_collections.ConfigDict(model_config).copy_and_resolve_references()
  for field, value in changes.items():
    config[field] = value
  config = platforms.resolve_model_config(config, platform)
  return config, models.build_model(config)


def abstract_params(model_config) -> dict:
  """Parameter shapes (checkpoint layout) from `jax.eval_shape`; no init."""
  _, model = _model(model_config, 'cpu')  # Same shapes on every platform.
  size = models.minimum_size(model_config)  # the shapes do not depend on it
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)['params']


def _module_key(name):
  prefix = next((i for i, p in enumerate(_MODULE_ORDER)
                 if name.startswith(p)), len(_MODULE_ORDER))
  return prefix, name


def parameter_counts(params) -> dict:
  """{'total': n, 'per_module': {top-level module: n}} of a params tree.

  Any layout and leaf kind (arrays or ShapeDtypeStructs); a stacked tree is
  counted per block, without the zeros of the stacked dense fusion.
  """
  if set(params) == {'params'}:
    params = params['params']
  params = jax.eval_shape(stacking.unstack_blocks, dict(params))
  per_module = {
      name: sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params[name]))
      for name in sorted(params, key=_module_key)}
  return {'total': sum(per_module.values()), 'per_module': per_module}


def _subjaxprs(value):
  values = value if isinstance(value, (tuple, list)) else (value,)
  for item in values:
    if isinstance(item, jax_core.ClosedJaxpr):
      yield item.jaxpr
    elif isinstance(item, jax_core.Jaxpr):
      yield item


def _count_ops(jaxpr, totals, repeat=1):
  """Adds the MACs and element counts of `jaxpr` (and sub-jaxprs) to totals."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out_size = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params['dimension_numbers'].rhs_spec[0]]
      totals['conv_macs'] += repeat * out_size * math.prod(kernel) // out_features
      totals['conv_outputs'] += repeat * out_size
      totals['convs'] += repeat
    elif name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      totals['matmul_macs'] += repeat * out_size * math.prod(
          lhs[d] for d in contracting)
    elif name in ('pjit', 'jit') and eqn.params.get('name') == 'leaky_relu':
      totals['leaky_relu_outputs'] += repeat * out_size
      continue  # its insides are elementwise ops, no MACs
    elif name == 'while':
      totals['while_loops'] += repeat  # trip count unknown: body counted once
    inner = repeat * (eqn.params.get('length', 1) if name == 'scan' else 1)
    for value in eqn.params.values():
      for sub in _subjaxprs(value):
        _count_ops(sub, totals, inner)


def _cpu_device():
  """A CPU device, or None (the default) where JAX_PLATFORMS hides CPU."""
  try:
    return jax.devices('cpu')[0]
  except RuntimeError:
    return None


def _cost_analysis(lowered) -> dict:
  """XLA's cost analysis of the graph as lowered (no optimisation pass),
  else, on backends without one (PJRT plugins), of the compiled graph."""
  analysis = lowered.cost_analysis()
  if analysis is None:
    analysis = lowered.compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0]
  return analysis


def forward_cost(model_config, height: int = 256, width: int = 256, *,
                 params=None, scanned_too: bool = True) -> dict:
  """FLOPs (XLA), MACs and friends of one image's forward pass.

  The graph is the unrolled one (scan_blocks=False) with conv_impl='xla',
  lowered for CPU; `scanned_too` also reports XLA's count of the scanned
  graph, which counts each scan body once (a check, not a cost).
  """
  params = abstract_params(model_config) if params is None else params
  params = jax.eval_shape(stacking.unstack_blocks, dict(params))
  images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  result = {'height': height, 'width': width, 'channels': 3, 'batch': 1,
            'padded_to_minimum': min(height, width) < models.minimum_size(
                model_config)}
  with jax.default_device(_cpu_device()):
    _, model = _model(model_config, 'cpu', scan_blocks=False,
                      conv_impl='xla')
    traced = jax.jit(lambda p, x: model.apply({'params': p}, x)).trace(
        params, images)
    totals = dict.fromkeys(('conv_macs', 'matmul_macs', 'conv_outputs',
                            'leaky_relu_outputs', 'convs', 'while_loops'), 0)
    _count_ops(traced.jaxpr.jaxpr, totals)
    analysis = _cost_analysis(traced.lower())
    result.update(flops=int(analysis['flops']),
                  transcendentals=int(analysis.get('transcendentals', 0)),
                  bytes_accessed=int(analysis.get('bytes accessed', 0)))
    if scanned_too:
      stacked = jax.eval_shape(stacking.stack_blocks, params)
      _, scanned = _model(model_config, 'cpu', scan_blocks=True,
                          conv_impl='xla')
      lowered = jax.jit(lambda p, x: scanned.apply({'params': p}, x)).lower(
          stacked, images)
      result['xla_flops_scanned_graph'] = int(
          _cost_analysis(lowered)['flops'])
  result.update(totals)
  result['macs'] = totals['conv_macs'] + totals['matmul_macs']
  result['mmcv_style'] = (result['macs'] + totals['conv_outputs']
                          + totals['leaky_relu_outputs'])
  return result


def train_memory(model_config, batch_size: int, patch_size: int,
                 loss_fn: Callable, *, params=None) -> Optional[dict]:
  """XLA's memory analysis of value_and_grad(loss) for one training batch.

  Args:
    loss_fn: (derained, clean) -> scalar loss, e.g. the trainer's -SSIM.
    params: a params tree (shapes suffice); default `abstract_params`.
  Returns:
    bytes of temp buffers (activations kept for the backward pass and
    workspace), arguments (params + batch) and outputs (loss + gradients), or
    None when the backend gives no memory analysis.
  """
  device = jax.devices()[0]  # where jit compiles by default
  platform = platforms.platform_of([device])
  config, model = _model(model_config, platform)
  params = abstract_params(config) if params is None else params
  params = jax.eval_shape(
      lambda p: stacking.runtime_layout(stacking.unstack_blocks(p), config),
      dict(params))
  batch = jax.ShapeDtypeStruct((batch_size, patch_size, patch_size, 3),
                               jnp.float32)

  def loss(p, rainy, clean):
    return loss_fn(model.apply({'params': p}, rainy), clean)

  start = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(loss)).lower(params, batch,
                                                     batch).compile()
  compile_seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return {'batch_size': batch_size, 'patch_size': patch_size,
          'scan_blocks': bool(config.scan_blocks),
          'remat': bool(config.scan_blocks) and config.remat,
          'dtype': config.dtype, 'conv_impl': config.conv_impl,
          'backend': platform, 'device': device.device_kind,
          'temp_bytes': int(stats.temp_size_in_bytes),
          'argument_bytes': int(stats.argument_size_in_bytes),
          'output_bytes': int(stats.output_size_in_bytes),
          'compile_seconds': round(compile_seconds, 1)}


def toolbox_reference(model_config, height: int, width: int) -> Optional[dict]:
  """derain-toolbox's published figures when they describe this network."""
  official = models.preset('official')
  unit = model_config.recurrent_unit
  if (any(model_config[f] != official[f] for f in _ARCHITECTURE_FIELDS)
      or unit not in TOOLBOX_REFERENCE or (height, width) != TOOLBOX_SIZE):
    return None
  gflops, mparams = TOOLBOX_REFERENCE[unit]
  # The toolbox's re-implementation ends in a 3x3 conv (3C -> 3) where the
  # released code has a 1x1 (merge.0): 8 more taps per input channel.
  extra = 3 * 3 * model_config.channels * 8 * height * width
  return {'source': 'derain-toolbox configs/dcsfn/README.md (get_flops.py, '
                    'mmcv get_model_complexity_info)',
          'model': f'DCSFN({unit})', 'input': [3, height, width],
          'gflops': gflops, 'mparams': mparams,
          'final_conv_3x3_extra_macs': extra}


def model_card(model_config, *, loss_fn: Optional[Callable] = None,
               loss_name: str = '', params=None, height: int = 256,
               width: int = 256, batch_size: int = 16, patch_size: int = 64,
               released_parameters: Optional[int] = None,
               source: str = '') -> dict:
  """Every figure of the card, JSON-able; no memory without `loss_fn`."""
  seconds = {}
  start = time.perf_counter()
  shapes = abstract_params(model_config) if params is None else params
  parameters = parameter_counts(shapes)
  if released_parameters is not None:
    parameters['released_state_dict'] = int(released_parameters)
    parameters['released_but_unused'] = (int(released_parameters)
                                         - parameters['total'])
  seconds['parameters'] = time.perf_counter() - start
  start = time.perf_counter()
  compute = forward_cost(model_config, height, width, params=shapes)
  seconds['compute'] = time.perf_counter() - start
  memory = None
  if loss_fn is not None:
    start = time.perf_counter()
    memory = train_memory(model_config, batch_size, patch_size, loss_fn,
                          params=shapes)
    if memory is not None:
      memory['loss'] = loss_name
    seconds['memory'] = time.perf_counter() - start
  return {'source': source,
          'model_config': ml_collections.ConfigDict(model_config).to_dict(),
          'parameters': parameters, 'compute': compute,
          'reference': toolbox_reference(model_config, height, width),
          'training_memory': memory,
          'seconds': {k: round(v, 1) for k, v in seconds.items()}}


def _giga(value):
  return f'{value / 1e9:,.2f} G'


def _mebi(value):
  if value < 2**20:
    return f'{value / 2**10:,.1f} KiB'
  return f'{value / 2**20:,.1f} MiB'


def _compute_lines(compute, reference):
  size = f"{compute['channels']}x{compute['height']}x{compute['width']}"
  lines = [f'## Arithmetic per image ({size})', '',
           '| measure | value | counted as |', '|---|---:|---|',
           f"| FLOPs (XLA) | {_giga(compute['flops'])} | XLA cost analysis of "
           'the unrolled graph (scan_blocks=False), batch 1: 2 per '
           'multiply-add over in-image taps, 1 per elementwise op |',
           f"| MACs | {_giga(compute['macs'])} | conv and matmul "
           'multiply-accumulates, every kernel tap (zero padding included); '
           'no bias, no activation |',
           f"| mmcv-style | {_giga(compute['mmcv_style'])} | MACs + one bias "
           'add per conv output + one per LeakyReLU output (get_flops.py\'s '
           'rules) |',
           f"| transcendentals (XLA) | {compute['transcendentals'] / 1e6:,.2f}"
           ' M | sigmoid, tanh |', '']
  if compute['padded_to_minimum']:
    lines += ['Smaller than the network\'s minimum size: counted on the '
              'padded input the network runs on.', '']
  if compute['while_loops']:
    lines += [f"The graph holds {compute['while_loops']} while loop(s) whose "
              'bodies are counted once.', '']
  if 'xla_flops_scanned_graph' in compute:
    lines += [f"XLA counts a scan's while body once: the scanned graph "
              f"(scan_blocks=True) would read "
              f"{_giga(compute['xla_flops_scanned_graph'])}, which is why the "
              'unrolled graph is counted.', '']
  if reference:
    adjusted = compute['mmcv_style'] + reference['final_conv_3x3_extra_macs']
    lines += [
        f"Reference: derain-toolbox's get_flops.py reports "
        f"**{reference['gflops']} G** for {reference['model']} at "
        f"(3, 256, 256) and {reference['mparams']} M parameters. It counts "
        'the mmcv-style way (its "GFLOPs" are MACs plus bias adds and '
        f"activations): ours is {_giga(compute['mmcv_style'])} "
        f"(pure MACs {_giga(compute['macs'])}, XLA FLOPs "
        f"{_giga(compute['flops'])}, about 2 per MAC). The toolbox's "
        're-implementation ends in a 3x3 conv where the released code has a '
        f"1x1 (+{reference['final_conv_3x3_extra_macs'] / 1e6:,.1f} M MACs), "
        f'which under the same rules gives {_giga(adjusted)}. Its '
        f"parameter count is the released state_dict's.", '']
  return lines


def _memory_lines(memory):
  if memory is None:
    return ['## Training memory', '',
            'Not measured (no loss given, or the backend has no memory '
            'analysis).', '']
  scan = ('off: unrolled blocks, no rematerialisation'
          if not memory['scan_blocks'] else
          'on: the blocks run as a rematerialised lax.scan'
          if memory['remat'] else 'on, remat off: the blocks run as a '
          'lax.scan that keeps their activations')
  return [
      f"## Training memory (batch {memory['batch_size']} x "
      f"{memory['patch_size']}x{memory['patch_size']} patches)", '',
      '| buffers | size |', '|---|---:|',
      f"| temporaries (activations for the backward pass, workspace) | "
      f"{_mebi(memory['temp_bytes'])} |",
      f"| arguments (params + batch) | {_mebi(memory['argument_bytes'])} |",
      f"| outputs (loss + gradients) | {_mebi(memory['output_bytes'])} |", '',
      f"XLA memory analysis of value_and_grad({memory['loss'] or 'loss'}), "
      f"compiled for {memory['backend']} ({memory['device']}), "
      f"conv_impl={memory['conv_impl']}, dtype={memory['dtype']}; "
      f'scan_blocks/remat {scan}. The whole batch on one device; Adam\'s '
      'moments (2 x params) and the update are not included.', '']


def to_markdown(card: dict) -> str:
  """The card as Markdown."""
  config = card['model_config']
  parameters = card['parameters']
  fields = ', '.join(f'{k}={v}' for k, v in config.items())
  lines = ['# DCSFN model card', '']
  if card['source']:
    lines += [f"Source: {card['source']}", '']
  lines += [f'Model config: {fields}', '', '## Parameters', '',
            '| module | parameters |', '|---|---:|']
  lines += [f'| {name} | {count:,} |'
            for name, count in parameters['per_module'].items()]
  lines += [f"| **total** | **{parameters['total']:,}** |", '']
  if 'released_state_dict' in parameters:
    lines += [f"The released PyTorch state_dict for this config holds "
              f"{parameters['released_state_dict']:,} values: "
              f"{parameters['released_but_unused']:,} of them are in convs the "
              'released module owns but never reads (export writes them as '
              'zeros).', '']
  lines += _compute_lines(card['compute'], card['reference'])
  lines += _memory_lines(card['training_memory'])
  timing = ', '.join(f'{k} {v} s' for k, v in card['seconds'].items())
  lines += [f'Computed in: {timing}.', '']
  return '\n'.join(lines)
