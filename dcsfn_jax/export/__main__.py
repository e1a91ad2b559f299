r"""Exports a project checkpoint as PyTorch weights keyed like the released code.

  python -m dcsfn_jax.export --workdir /tmp/run --output dcsfn.pth
  python -m dcsfn_jax.export --workdir /tmp/run --output dcsfn.safetensors

--workdir is anything `dcsfn_jax.checkpointing.load_pretrained` reads (a
training workdir, one step, or a save_pretrained directory). A .pth file is a
plain state_dict: `torch.load(path, weights_only=True)` and
`build_torch_model(config).load_state_dict(sd, strict=True)` (or the released
module, for the official preset). A .safetensors file also records the model
config as JSON metadata. Tensors our model never uses are zero-filled (see
`to_torch_state_dict`). The weights expect images in the checkpoint's
`model.channel_order` ('bgr' for imported released weights, else 'rgb').
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags

from dcsfn_jax import checkpointing
from dcsfn_jax.export import convert


def write_torch_weights(state_dict: dict, path: str, model_config) -> None:
  """Writes a numpy state_dict as .pth (plain state_dict) or .safetensors."""
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    metadata = {convert.SAFETENSORS_CONFIG_KEY: model_config.to_json(),
                'channel_order': model_config.channel_order}
    save_file(state_dict, path, metadata=metadata)
  elif path.endswith('.pth'):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError("Writing .pth needs torch: pip install "
                        "'dcsfn_jax[torch]', or write .safetensors.") from error
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
  else:
    raise ValueError(f'--output {path} must end in .pth or .safetensors.')


def export_checkpoint(workdir: str, output: str, prefer: str = 'latest',
                      overwrite: bool = False) -> dict:
  """Converts the checkpoint at `workdir` and writes `output`; returns a summary.
  """
  if os.path.exists(output) and not overwrite:
    raise FileExistsError(f'{output} exists; pass --overwrite to replace it.')
  if not output.endswith(('.pth', '.safetensors')):
    raise ValueError(f'--output {output} must end in .pth or .safetensors.')
  params, config = checkpointing.load_pretrained(workdir, prefer=prefer)
  if 'model' not in config:
    raise ValueError(f'The checkpoint at {workdir} has no model config '
                     f'(config fields: {sorted(config.keys())}).')
  state_dict = convert.to_torch_state_dict(params, config.model)
  write_torch_weights(state_dict, output, config.model)
  return {'tensors': len(state_dict),
          'values': sum(v.size for v in state_dict.values()),
          'channel_order': config.model.channel_order}


def _define_flags() -> None:
  # Defined only when run as a script, so importing this module never claims
  # global flag names.
  flags.DEFINE_string('workdir', None, 'Training workdir, checkpoint step '
                      'directory or save_pretrained directory.')
  flags.DEFINE_string('output', None,
                      'Weights file to write: *.pth or *.safetensors.')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which step of a training workdir to export.')
  flags.DEFINE_bool('overwrite', False, 'Replace --output if it exists.')
  flags.mark_flags_as_required(['workdir', 'output'])


def main(argv: Optional[Sequence[str]]) -> None:
  del argv
  flag_values = flags.FLAGS
  try:
    summary = export_checkpoint(flag_values.workdir, flag_values.output,
                                flag_values.prefer, flag_values.overwrite)
  except (ValueError, OSError, ImportError) as error:
    sys.exit(f'error: {error}')
  print(f"Wrote {summary['tensors']} tensors ({summary['values']:,} values) "
        f"to {flag_values.output}; they expect "
        f"{summary['channel_order'].upper()} images in [0, 1], NCHW.")


if __name__ == '__main__':
  _define_flags()
  app.run(main)
