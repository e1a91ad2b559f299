"""The stacked parameter layout: a dense stack's L blocks as one subtree.

Canonical parameters (what `init_params` returns, what checkpoints and the
PyTorch converters hold) name every block and fusion conv, as the released
state_dict does: encoder_scale1/block_0/..., conv1x1_0/..., one tensor each,
4,098 tensors for the official preset. In the stacked layout each dense stack
holds instead
  blocks/...                 the block_{i} subtrees, every leaf with a
                             leading axis of size L;
  dense_fusion/input_kernel  [C, L, C]: conv1x1_k's rows for the stack input,
                             at [:, k, :];
  dense_fusion/step_kernel   [L, C, L, C]: at [s, :, k, :] conv1x1_k's rows
                             for block s's output (s <= k), zero for s > k;
  dense_fusion/bias          [L, C]: conv1x1_k's bias at [k],
which is what the scanned forward pass (`scan_blocks=True`) consumes; 324
tensors for the official preset. The forward pass reads either layout. The
zeros of step_kernel get exactly zero gradient (block k's fusion has been
read before block s > k runs), so Adam keeps them zero. The trainer keeps
its params and Adam moments stacked: their update compiles in seconds
rather than minutes.

Both functions take any pytree (params, optax states holding param-shaped
moments) of numpy or jax arrays. unstack_blocks(stack_blocks(t)) == t
exactly; the other way round holds while the zeros above are zero.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

STACKED_BLOCKS = 'blocks'
DENSE_FUSION = 'dense_fusion'
_BLOCK_NAME = re.compile(r'block_(\d+)$')
_FUSION_NAME = re.compile(r'conv1x1_(\d+)$')


def _holds_blocks(node) -> bool:
  return isinstance(node, dict) and any(_BLOCK_NAME.match(n) for n in node)


def _holds_stacked(node) -> bool:
  return isinstance(node, dict) and STACKED_BLOCKS in node


def _numpy_for(*arrays):
  """numpy for host arrays, jax.numpy for anything else (traced included)."""
  return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def _stack(*leaves):
  return _numpy_for(*leaves).stack(leaves)


def _stack_fusions(fusions: list) -> dict:
  """conv1x1_0..conv1x1_{L-1} params -> the dense_fusion arrays."""
  count = len(fusions)
  kernels = [fusion['kernel'][0, 0] for fusion in fusions]  # [(k+2)C, C]
  xp = _numpy_for(*kernels)
  channels = kernels[0].shape[1]
  for k, kernel in enumerate(kernels):
    if kernel.shape != ((k + 2) * channels, channels):
      raise ValueError(f'conv1x1_{k} kernel has rows x cols {kernel.shape}; '
                       f'a dense stack needs {((k + 2) * channels, channels)}.')
  # Block k's rows for t_0..t_k, zero-padded to L steps: one pad per block
  # keeps the graph, and its compile time, small.
  step_kernel = xp.stack([
      xp.pad(kernel[channels:].reshape(k + 1, channels, channels),
             ((0, count - k - 1), (0, 0), (0, 0)))
      for k, kernel in enumerate(kernels)], axis=2)
  return {'input_kernel': xp.stack([k[:channels] for k in kernels], axis=1),
          'step_kernel': step_kernel,
          'bias': xp.stack([fusion['bias'] for fusion in fusions])}


def _unstack_fusions(dense_fusion: dict) -> dict:
  input_kernel, step_kernel = (dense_fusion['input_kernel'],
                               dense_fusion['step_kernel'])
  xp = _numpy_for(input_kernel, step_kernel)
  count, channels = step_kernel.shape[0], step_kernel.shape[1]
  fusions = {}
  for k in range(count):
    rows = xp.concatenate(
        [input_kernel[:, k], step_kernel[:k + 1, :, k].reshape(-1, channels)])
    fusions[f'conv1x1_{k}'] = {'bias': dense_fusion['bias'][k],
                               'kernel': rows[None, None]}
  return fusions


def _numbered(node, pattern, what) -> list[str]:
  """Names in `node` matching `pattern`, in index order; they must be 0..n-1."""
  found = {int(pattern.match(name)[1]): name for name in node
           if pattern.match(name)}
  if sorted(found) != list(range(len(found))):
    raise ValueError(f'Cannot stack {what} numbered {sorted(found)}; expected '
                     f'0..{len(found) - 1}.')
  return [found[i] for i in range(len(found))]


def stack_blocks(tree):
  """Replaces every dense stack's per-block params by the stacked layout.

  Raises:
    ValueError: if the indices are not 0..L-1, the blocks differ in structure
      or shapes, or the fusion convs do not fit a dense stack.
  """
  def stack_node(node):
    if not _holds_blocks(node):
      return node
    block_names = _numbered(node, _BLOCK_NAME, 'blocks')
    fusion_names = _numbered(node, _FUSION_NAME, 'dense fusion convs')
    try:
      stacked = jax.tree.map(_stack, *[node[name] for name in block_names])
    except ValueError as error:
      raise ValueError(f'Cannot stack blocks of different structure or '
                       f'shape: {error}') from error
    rest = {name: value for name, value in node.items()
            if name not in block_names and name not in fusion_names}
    rest[STACKED_BLOCKS] = stacked
    if fusion_names:
      if len(fusion_names) != len(block_names):
        raise ValueError(f'A dense stack of {len(block_names)} blocks has '
                         f'{len(fusion_names)} fusion convs (conv1x1_k).')
      rest[DENSE_FUSION] = _stack_fusions([node[n] for n in fusion_names])
    return rest

  return jax.tree.map(stack_node, tree, is_leaf=_holds_blocks)


def unstack_blocks(tree):
  """Inverse of `stack_blocks`; a tree without stacked blocks is returned as is."""
  def unstack_node(node):
    if not _holds_stacked(node):
      return node
    stacked = node[STACKED_BLOCKS]
    count = jax.tree.leaves(stacked)[0].shape[0]
    rest = {name: value for name, value in node.items()
            if name not in (STACKED_BLOCKS, DENSE_FUSION)}
    rest.update({f'block_{i}': jax.tree.map(lambda leaf: leaf[i], stacked)
                 for i in range(count)})
    if DENSE_FUSION in node:
      rest.update(_unstack_fusions(node[DENSE_FUSION]))
    return rest

  return jax.tree.map(unstack_node, tree, is_leaf=_holds_stacked)


def runtime_layout(tree, model_config):
  """`tree` (params, or a state holding them) in the layout `model_config`'s
  forward pass runs on directly: stacked with scan_blocks, else per block.
  model_config: a model config or a DCSFN (reads scan_blocks).

  The trainer keeps its params and Adam moments this way, and inference
  stacks once instead of at every call.
  """
  return stack_blocks(tree) if model_config.scan_blocks else tree
