"""The stacked parameter layout: the L blocks of a dense stack as one subtree.

Canonical parameters (what `init_params` returns, what checkpoints and the
PyTorch converters hold) name every block: encoder_scale1/block_0/...,
block_1/..., one tensor each, 4,098 tensors for the official preset. In the
stacked layout each dense stack's `block_{i}` subtrees become one subtree
`blocks` whose leaves carry a leading axis of size L; the dense-fusion convs
`conv1x1_{i}` (whose shapes differ per block) are left as they are. The
scanned forward pass (`scan_blocks=True`) reads either layout; the stacked one
saves it the per-call stacking and lets the trainer keep its parameters and
Adam moments as ~400 tensors, whose update compiles in seconds rather than
minutes.

Both functions take any pytree (params, optax states holding param-shaped
moments) of numpy or jax arrays, and are exact inverses of each other.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

STACKED_BLOCKS = 'blocks'
_BLOCK_NAME = re.compile(r'block_(\d+)$')


def _block_names(node) -> list[str]:
  return [name for name in node if _BLOCK_NAME.match(name)]


def _holds_blocks(node) -> bool:
  return isinstance(node, dict) and bool(_block_names(node))


def _holds_stacked(node) -> bool:
  return isinstance(node, dict) and STACKED_BLOCKS in node


def _stack(*leaves):
  if all(isinstance(leaf, np.ndarray) for leaf in leaves):
    return np.stack(leaves)
  return jnp.stack(leaves)


def stack_blocks(tree):
  """Replaces every {block_0, ..., block_{L-1}} group by one stacked 'blocks'.

  Raises:
    ValueError: if a group's indices are not 0..L-1 or the blocks differ in
      structure or shapes.
  """
  def stack_node(node):
    if not _holds_blocks(node):
      return node
    names = _block_names(node)
    indices = sorted(int(_BLOCK_NAME.match(name)[1]) for name in names)
    if indices != list(range(len(indices))):
      raise ValueError(f'Cannot stack blocks numbered {indices}; expected '
                       f'block_0..block_{len(indices) - 1}.')
    blocks = [node[f'block_{i}'] for i in indices]
    try:
      stacked = jax.tree.map(_stack, *blocks)
    except ValueError as error:
      raise ValueError(f'Cannot stack blocks of different structure or '
                       f'shape: {error}') from error
    rest = {name: value for name, value in node.items() if name not in names}
    return {**rest, STACKED_BLOCKS: stacked}

  return jax.tree.map(stack_node, tree, is_leaf=_holds_blocks)


def unstack_blocks(tree):
  """Inverse of `stack_blocks`; a tree without stacked blocks is returned as is."""
  def unstack_node(node):
    if not _holds_stacked(node):
      return node
    stacked = node[STACKED_BLOCKS]
    count = jax.tree.leaves(stacked)[0].shape[0]
    rest = {name: value for name, value in node.items()
            if name != STACKED_BLOCKS}
    return {**rest, **{f'block_{i}': jax.tree.map(lambda leaf: leaf[i], stacked)
                       for i in range(count)}}

  return jax.tree.map(unstack_node, tree, is_leaf=_holds_stacked)


def runtime_layout(tree, model_config):
  """`tree` (params, or a state holding them) in the layout `model_config`'s
  forward pass runs on directly: stacked with scan_blocks, else per block.

  The trainer keeps its params and Adam moments this way, and inference
  stacks once instead of at every call.
  """
  return stack_blocks(tree) if model_config.scan_blocks else tree
