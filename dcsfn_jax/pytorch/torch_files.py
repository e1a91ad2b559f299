"""PyTorch weight files in and out of project checkpoints.

Reading: the released training file (`torch.save({'net': ..., 'clock_net':
step, 'opt_net': ...})`, keys possibly prefixed `module.` by DataParallel), a
plain state_dict (.pth) or a .safetensors file, always with
`torch.load(..., weights_only=True)`, which never runs pickled code. Writing:
a .pth or .safetensors keyed exactly like the released module's state_dict.

The released weights were trained on BGR images (cv2); `released_model_config`
is the one place that says so.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import tempfile
import warnings
from typing import Mapping, Sequence

from absl import logging
import jax
import ml_collections

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax import paths
from dcsfn_jax.pytorch import convert


def _describe(obj) -> str:
  if isinstance(obj, Mapping):
    keys = sorted(str(k) for k in obj)
    shown = ', '.join(keys[:8]) + (' ...' if len(keys) > 8 else '')
    return f'a {type(obj).__name__} with keys [{shown}]'
  return f'a {type(obj).__name__}'


def _looks_like_state_dict(obj) -> bool:
  return (isinstance(obj, Mapping) and len(obj) > 0 and
          all(hasattr(v, 'shape') for v in obj.values()))


# Keys of the .pth wrapper `write_torch_weights` writes beside 'net'.
_PTH_MODEL_CONFIG = 'model_config'
_PTH_CHANNEL_ORDER = 'channel_order'
# How to install what reading and writing PyTorch files needs.
_TORCH_EXTRA = "pip install -e '.[torch]'"


def _from_torch_extra(module: str, task: str):
  """Imports `module` (torch or a safetensors module) for `task`, or raises
  ImportError in one line naming the extra to install."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f'{task} needs the torch extra (torch and '
                      f'safetensors): {_TORCH_EXTRA}') from None


def _recorded_config(text, path):
  """The model config recorded in an export as JSON text, or None; a
  ValueError naming `path` if it is not a JSON object of flat fields whose
  structural ones lie within `convert.STRUCTURE_LIMITS`."""
  if not text:
    return None
  if not isinstance(text, str):
    raise ValueError(f'{path}: its recorded model config is '
                     f'{type(text).__name__}, not JSON text.')
  try:
    recorded = json.loads(text)
  except (json.JSONDecodeError, RecursionError) as error:
    reason = ('nested too deeply' if isinstance(error, RecursionError)
              else error)
    raise ValueError(
        f'{path}: its recorded model config is not valid JSON ({reason}); '
        're-export the checkpoint, or strip the metadata and pass --preset.'
    ) from None
  if not isinstance(recorded, dict):
    raise ValueError(f'{path}: its recorded model config is '
                     f'{type(recorded).__name__}, not a JSON object.')
  nested = sorted(key for key, value in recorded.items()
                  if isinstance(value, (dict, list)))
  if nested:
    raise ValueError(f'{path}: its recorded model config has nested values '
                     f'in {nested}; every field is a number, string or bool.')
  try:
    convert.check_structure(recorded)
  except ValueError as error:
    raise ValueError(f'{path}: its recorded {error} Re-export the '
                     'checkpoint.') from None
  return ml_collections.ConfigDict(recorded)


def _refuse_non_finite(state_dict, path):
  name = convert.first_non_finite(state_dict)
  if name is not None:
    raise ValueError(f'{path}: tensor {name!r} holds inf or NaN values; '
                     'these weights would turn every photo to garbage. Use '
                     'a checkpoint from before the training diverged.')


def _read_safetensors(path):
  safe_open = _from_torch_extra('safetensors',
                                'reading .safetensors').safe_open
  try:
    with safe_open(path, framework='numpy') as reader:
      metadata = reader.metadata() or {}
      state_dict = {key: reader.get_tensor(key) for key in reader.keys()}
  except Exception as error:  # SafetensorError, OSError, ... for bad files
    raise ValueError(f'{path} is not a readable .safetensors file '
                     f'({type(error).__name__}: {error}).') from None
  return state_dict, _recorded_config(
      metadata.get(convert.SAFETENSORS_CONFIG_KEY), path)


def _load_reason(error):
  """The line of a torch.load error that says what is wrong with the file.

  torch's message also advises retrying with weights_only=False, which would
  run the file's code: wrong advice for an untrusted file, so it is dropped.
  """
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  advice = ('weights_only', 'trusted source', 'torch.load', 'documentation')
  reasons = [line for line in lines
             if not any(word in line for word in advice)]
  return (reasons[0] if reasons else 'not a weights-only PyTorch file')[:300]


def _read_pth(path):
  torch = _from_torch_extra('torch', 'reading PyTorch checkpoints')
  try:
    with warnings.catch_warnings():
      # e.g. "Detected pickle protocol 4": noise about a file refused anyway.
      warnings.simplefilter('ignore', UserWarning)
      loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # torch raises several types for foreign files.
    raise ValueError(
        f'{path} is not a PyTorch checkpoint that loads safely with '
        f'weights_only=True ({type(error).__name__}: {_load_reason(error)}); '
        'it was refused without running any of its code. Use the authors\' '
        'released file or one written by python -m dcsfn_jax.export.'
    ) from None
  model_config = None
  if isinstance(loaded, Mapping) and 'net' in loaded:
    model_config = _recorded_config(loaded.get(_PTH_MODEL_CONFIG), path)
    loaded = loaded['net']
  if not _looks_like_state_dict(loaded):
    raise ValueError(
        f'{path} is not a DCSFN checkpoint: expected a state_dict of tensors '
        f"or a dict with a 'net' state_dict, found {_describe(loaded)}.")
  return loaded, model_config


def read_torch_weights(path: str) -> tuple:
  """Reads a DCSFN weights file -> (state_dict, model config or None).

  The model config (with its channel order) is the one an export recorded;
  None for the authors' released files and plain state_dicts. Raises
  FileNotFoundError, or ValueError naming the file and what is wrong with it:
  unreadable, a recorded config out of `convert.STRUCTURE_LIMITS` or not
  flat JSON, or a tensor holding inf or NaN (named).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No checkpoint file at {path}.')
  if path.endswith('.safetensors'):
    state_dict, model_config = _read_safetensors(path)
  else:
    state_dict, model_config = _read_pth(path)
  _refuse_non_finite(state_dict, path)
  return state_dict, model_config


def released_model_config(preset='official'):
  """The model config of the authors' released weights: `preset` run on BGR
  images, as the released code trained them (cv2 loads BGR)."""
  model_config = models.preset(preset)
  model_config.channel_order = 'bgr'
  return model_config


def released_assumption(preset='official'):
  """Why weights without a recorded config are read as they are."""
  return ('no model config recorded in the file: assumed the authors\' '
          f'release, the {preset!r} preset trained on BGR images')


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

  Returns a summary dict (tensors read, params written, model config, and
  where its channel order came from). Raises ValueError naming the file for
  a bad file (see `read_torch_weights`) or weights that do not fit the model
  config, counted before any key name is built.
  """
  if os.path.exists(output):
    raise FileExistsError(f'{output} exists; choose a new --output directory.')
  state_dict, recorded_config = read_torch_weights(checkpoint)
  if recorded_config is None:
    model_config = released_model_config(preset)
    order_source = released_assumption(preset)
    fits = f'the model config (preset {preset!r}, overrides {list(overrides)})'
  else:
    model_config = recorded_config
    order_source = 'recorded in the file by dcsfn_jax.export'
    fits = f'the model config it records (overrides {list(overrides)})'
  logging.info('%s: channel_order=%r (%s).', checkpoint,
               model_config.channel_order, order_source)
  apply_overrides(model_config, overrides)
  models.validate(model_config)
  try:
    params = convert.from_torch_state_dict(state_dict, model_config)
  except ValueError as error:
    raise ValueError(f'{checkpoint} does not match {fits}: {error}'
                     ) from error
  config = ml_collections.ConfigDict()
  config.model = model_config
  config.imported_from = os.path.abspath(checkpoint)
  checkpointing.save_pretrained(output, params, config)
  num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
  return {'tensors_read': len(convert.unwrap_state_dict(state_dict)),
          'params_written': num_params, 'model_config': model_config,
          'channel_order_source': order_source}


def _encoder(path: str):
  """(state_dict, model_config) -> the file's bytes, for path's suffix.

  Raises ImportError naming the extra to install, or ValueError for a suffix
  that is neither .pth nor .safetensors.
  """
  if path.endswith('.safetensors'):
    save = _from_torch_extra('safetensors.numpy',
                             'writing .safetensors').save

    def encode(state_dict, model_config):
      return save(state_dict, metadata={
          convert.SAFETENSORS_CONFIG_KEY: model_config.to_json(),
          'channel_order': model_config.channel_order})
    return encode
  if path.endswith('.pth'):
    torch = _from_torch_extra('torch', 'writing .pth')

    def encode(state_dict, model_config):
      buffer = io.BytesIO()
      torch.save({'net': {k: torch.from_numpy(v)
                          for k, v in state_dict.items()},
                  _PTH_MODEL_CONFIG: model_config.to_json(),
                  _PTH_CHANNEL_ORDER: model_config.channel_order}, buffer)
      return buffer.getvalue()
    return encode
  raise ValueError(f'--output {path} must end in .pth or .safetensors.')


def _replace_atomically(path: str, content: bytes) -> None:
  """Writes `content` to a hidden file beside `path`, then renames it over
  `path`: a failure (a full disk) leaves any previous file whole and no
  partial file. Raises OSError in one line saying so."""
  folder = os.path.dirname(os.path.abspath(path))
  kept = ('the previous file is unchanged' if os.path.exists(path)
          else 'nothing was written')
  try:
    handle, temporary = tempfile.mkstemp(
        dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.partial')
  except OSError as error:
    raise OSError(f'--output {path}: cannot write in {folder} '
                  f'({error.strerror}); {kept}.') from None
  try:
    with os.fdopen(handle, 'wb') as file:
      file.write(content)
      file.flush()
      os.fsync(file.fileno())
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)
  except OSError as error:
    os.unlink(temporary)
    raise OSError(f'--output {path}: writing it failed ({error.strerror}); '
                  f'{kept}.') from None


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_torch_weights(state_dict: dict, path: str, model_config) -> None:
  """Writes a numpy state_dict with its model config and channel order.

  .safetensors: the tensors, the config as JSON metadata. .pth: {'net':
  state_dict, 'model_config': JSON, 'channel_order': ...}, which the released
  loader reads as it reads its own training files ('net'). The file appears
  whole or not at all (`_replace_atomically`).
  """
  path = os.fspath(path)
  _replace_atomically(path, _encoder(path)(state_dict, model_config))


def export_checkpoint(workdir: str, output: str, prefer: str = 'latest',
                      overwrite: bool = False, weights: str = 'ema') -> dict:
  """Converts the checkpoint at `workdir` and writes `output`; returns a summary.
  """
  output = os.fspath(output)
  if os.path.isdir(output):
    raise IsADirectoryError(f'--output {output} is a folder; name a file in '
                            f'it, e.g. {os.path.join(output, "dcsfn.pth")}.')
  if os.path.exists(output) and not overwrite:
    raise FileExistsError(f'{output} exists; pass --overwrite to replace it.')
  encode = _encoder(output)
  weights, weights_note = checkpointing.choose_weights(workdir, weights, prefer)
  params, config = checkpointing.load_pretrained(workdir, prefer, weights)
  if 'model' not in config:
    raise ValueError(f'The checkpoint at {workdir} has no model config '
                     f'(config fields: {sorted(config.keys())}).')
  state_dict = convert.to_torch_state_dict(params, config.model)
  content = encode(state_dict, config.model)
  with paths.new_folder(os.path.dirname(os.path.abspath(output)),
                        flag=f'--output {output}: its folder'):
    _replace_atomically(output, content)
  return {'tensors': len(state_dict),
          'values': sum(v.size for v in state_dict.values()),
          'channel_order': config.model.channel_order,
          'weights_note': weights_note}
