r"""Turns released PyTorch DCSFN weights into a project checkpoint.

  python -m dcsfn_jax.import_torch --checkpoint latest_net \
      --output /tmp/dcsfn_official [--preset official] \
      [--model_override recurrent_unit=LSTM ...]

The checkpoint may be the released training file (`torch.save({'net': ...,
'clock_net': step, 'opt_net': ...})`, keys possibly prefixed `module.` by
DataParallel), a plain state_dict (.pth), or a .safetensors file written by
`python -m dcsfn_jax.export` (its recorded model config is then used). Files
are read with `torch.load(..., weights_only=True)`, which never runs pickled
code. The model config is the preset with channel_order='bgr' (the released
weights were trained on BGR images), edited by --model_override; the result
is written with `dcsfn_jax.checkpointing.save_pretrained` and runs on RGB
images like any project checkpoint:

  params, config = dcsfn_jax.checkpointing.load_pretrained('/tmp/dcsfn_official')
"""
from __future__ import annotations

import json
import os
import sys
from typing import Mapping, Optional, Sequence

from absl import app
from absl import flags
import jax
import ml_collections

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax.export import convert


def _describe(obj) -> str:
  if isinstance(obj, Mapping):
    keys = sorted(str(k) for k in obj)
    shown = ', '.join(keys[:8]) + (' ...' if len(keys) > 8 else '')
    return f'a {type(obj).__name__} with keys [{shown}]'
  return f'a {type(obj).__name__}'


def _looks_like_state_dict(obj) -> bool:
  return (isinstance(obj, Mapping) and len(obj) > 0 and
          all(hasattr(v, 'shape') for v in obj.values()))


def read_torch_weights(path: str) -> tuple:
  """Reads a DCSFN weights file -> (state_dict, model config or None).

  The model config is the one a .safetensors export recorded; None otherwise.
  Raises FileNotFoundError, or ValueError naming what the file holds when it
  is not DCSFN weights.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No checkpoint file at {path}.')
  if path.endswith('.safetensors'):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    with safe_open(path, framework='numpy') as reader:
      metadata = reader.metadata() or {}
    recorded = metadata.get(convert.SAFETENSORS_CONFIG_KEY)
    model_config = (ml_collections.ConfigDict(json.loads(recorded))
                    if recorded else None)
    return load_file(path), model_config
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError('Reading PyTorch checkpoints needs torch: '
                      "pip install 'dcsfn_jax[torch]'.") from error
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # torch raises several types for foreign files.
    raise ValueError(
        f'{path} is not a PyTorch checkpoint that loads with '
        f'weights_only=True ({type(error).__name__}: '
        f'{str(error).splitlines()[0] if str(error) else ""}).') from error
  if isinstance(loaded, Mapping) and 'net' in loaded:
    loaded = loaded['net']
  if not _looks_like_state_dict(loaded):
    raise ValueError(
        f'{path} is not a DCSFN checkpoint: expected a state_dict of tensors '
        f"or a dict with a 'net' state_dict, found {_describe(loaded)}.")
  return loaded, None


def apply_overrides(model_config, overrides: Sequence[str]):
  """Edits `model_config` in place from 'field=value' strings; returns it."""
  for override in overrides:
    field, sep, text = override.partition('=')
    if not sep or field not in model_config:
      raise ValueError(
          f'Bad --model_override {override!r}: expected field=value with '
          f'field one of {sorted(model_config.keys())}.')
    current = model_config[field]
    if isinstance(current, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(f'Bad --model_override {override!r}: {field} takes '
                         'true or false.')
      value = text.lower() in ('true', '1')
    elif isinstance(current, int):
      try:
        value = int(text)
      except ValueError:
        raise ValueError(f'Bad --model_override {override!r}: {field} takes '
                         'an integer.') from None
    else:
      value = text
    model_config[field] = value
  return model_config


def import_torch_checkpoint(checkpoint: str, output: str,
                            preset: str = 'official',
                            overrides: Sequence[str] = ()) -> dict:
  """Converts `checkpoint` into a save_pretrained directory at `output`.

  Returns a summary dict (tensors read, params written, model config).
  """
  state_dict, recorded_config = read_torch_weights(checkpoint)
  if recorded_config is not None:
    model_config = recorded_config
  else:
    model_config = models.preset(preset)
    model_config.channel_order = 'bgr'
  apply_overrides(model_config, overrides)
  models.validate(model_config)
  try:
    params = convert.from_torch_state_dict(state_dict, model_config)
  except ValueError as error:
    raise ValueError(
        f'{checkpoint} does not match the model config (preset {preset!r}, '
        f'overrides {list(overrides)}): {error}') from error
  if os.path.exists(output):
    raise FileExistsError(f'{output} exists; choose a new --output directory.')
  config = ml_collections.ConfigDict()
  config.model = model_config
  config.imported_from = os.path.abspath(checkpoint)
  checkpointing.save_pretrained(output, params, config)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
  return {'tensors_read': len(convert.unwrap_state_dict(state_dict)),
          'params_written': num_params, 'model_config': model_config}


def _define_flags() -> None:
  # Defined only when run as a script, so importing this module (tests,
  # notebooks, other CLIs) never claims global flag names.
  flags.DEFINE_string('checkpoint', None, 'Released PyTorch checkpoint '
                      '(latest_net, net_N_epoch), a .pth state_dict or a '
                      '.safetensors export.')
  flags.DEFINE_string('output', None,
                      'New directory for the project checkpoint.')
  flags.DEFINE_enum('preset', 'official', ['official', 'paper'],
                    'Model preset the weights were trained with '
                    '(channel_order becomes bgr).')
  flags.DEFINE_multi_string('model_override', [],
                            'field=value edits of the preset, e.g. '
                            'recurrent_unit=LSTM or cross_scale=false; '
                            'repeat for several.')
  flags.mark_flags_as_required(['checkpoint', 'output'])


def main(argv: Optional[Sequence[str]]) -> None:
  del argv
  flag_values = flags.FLAGS
  try:
    summary = import_torch_checkpoint(flag_values.checkpoint,
                                      flag_values.output, flag_values.preset,
                                      flag_values.model_override)
  except (ValueError, OSError, ImportError) as error:
    sys.exit(f'error: {error}')
  print(f"Read {summary['tensors_read']} tensors from "
        f"{flag_values.checkpoint}; wrote {summary['params_written']:,} "
        f"parameters to {flag_values.output} "
        f"(channel_order={summary['model_config'].channel_order!r}).")


if __name__ == '__main__':
  _define_flags()
  app.run(main)
