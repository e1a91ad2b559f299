"""Convolutional recurrent cells of the cross-scale passes (REFERENCE §2.4).

Each cell maps (x [B, H, W, C], state) -> (output [B, H, W, C], new state) and
applies LReLU(0.2) to its new hidden state. A cell called with state=None runs
the released "first call" equations, which skip the h-convs entirely (their
biases included), so it differs from a call with a zero state. Convs that a
call never uses are never created.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from dcsfn_jax.models import layers


class _Cell(nn.Module):
  """Attributes: channels (C of x and the state), dtype (compute dtype) and
  conv (`layers.ConvFactory`); every conv is 3x3, C -> C."""
  channels: int
  dtype: DTypeLike
  conv: layers.ConvFactory

  def _conv(self, name: str, x: jax.Array) -> jax.Array:
    return self.conv(self.channels, 3, in_features=self.channels,
                     dtype=self.dtype, name=name)(x)


class GRUCell(_Cell):
  """state: the hidden map h, or None; output == new state."""

  @nn.compact
  def __call__(self, x, state=None):
    if state is None:
      z = jax.nn.sigmoid(self._conv('conv_xz', x))
      hidden = z * jnp.tanh(self._conv('conv_xn', x))
    else:
      z = jax.nn.sigmoid(self._conv('conv_xz', x) + self._conv('conv_hz', state))
      r = jax.nn.sigmoid(self._conv('conv_xr', x) + self._conv('conv_hr', state))
      n = jnp.tanh(self._conv('conv_xn', x) + self._conv('conv_hn', r * state))
      hidden = (1 - z) * state + z * n
    hidden = layers.leaky_relu(hidden)
    return hidden, hidden


class RNNCell(_Cell):
  """state: the hidden map h, or None; output == new state."""

  @nn.compact
  def __call__(self, x, state=None):
    pre_activation = self._conv('conv_x', x)
    if state is not None:
      pre_activation = pre_activation + self._conv('conv_h', state)
    hidden = layers.leaky_relu(jnp.tanh(pre_activation))
    return hidden, hidden


class LSTMCell(_Cell):
  """state: (h, c) or None; output is the new h (after LReLU), state (h, c)."""

  @nn.compact
  def __call__(self, x, state=None):
    if state is None:
      input_gate = jax.nn.sigmoid(self._conv('conv_xi', x))
      output_gate = jax.nn.sigmoid(self._conv('conv_xo', x))
      candidate = jnp.tanh(self._conv('conv_xj', x))
      cell = input_gate * candidate
      hidden = output_gate * cell
    else:
      hidden, cell = state
      gate = lambda g: self._conv(f'conv_x{g}', x) + self._conv(f'conv_h{g}',
                                                                 hidden)
      forget_gate = jax.nn.sigmoid(gate('f'))
      input_gate = jax.nn.sigmoid(gate('i'))
      output_gate = jax.nn.sigmoid(gate('o'))
      candidate = jnp.tanh(gate('j'))
      cell = forget_gate * cell + input_gate * candidate
      hidden = output_gate * jnp.tanh(cell)
    hidden = layers.leaky_relu(hidden)
    return hidden, (hidden, cell)


class ConvCell(_Cell):
  """Stateless: LReLU(conv x); the state argument is ignored, new state None."""

  @nn.compact
  def __call__(self, x, state=None):
    del state
    return layers.leaky_relu(self._conv('conv', x)), None


CELLS = {'GRU': GRUCell, 'LSTM': LSTMCell, 'RNN': RNNCell, 'Conv': ConvCell}
