"""Weights to and from PyTorch, keyed like the released DCSFN module.

`to_torch_state_dict` / `from_torch_state_dict` need only numpy. The PyTorch
twin (`dcsfn_jax.pytorch.torch_twin.build_torch_model`) needs torch, so it is
not imported here.
"""
from dcsfn_jax.pytorch.convert import from_torch_state_dict
from dcsfn_jax.pytorch.convert import to_torch_state_dict
from dcsfn_jax.pytorch.convert import torch_state_dict_shapes
