r"""Exports a project checkpoint as PyTorch weights keyed like the released code.

  python -m dcsfn_jax.export --workdir /tmp/run --output dcsfn.pth
  python -m dcsfn_jax.export --workdir /tmp/run --output dcsfn.safetensors

--workdir is anything `dcsfn_jax.checkpointing.load_pretrained` reads (a
training workdir, one step, or a save_pretrained directory). A .pth file holds
{'net': state_dict, 'model_config': JSON, 'channel_order': ...}: the released
loader reads its 'net', `torch.load(path, weights_only=True)` reads it all,
and `build_torch_model(config).load_state_dict(sd['net'], strict=True)` runs
it. A .safetensors file records the same config as metadata. Tensors our
model never uses are zero-filled (see `to_torch_state_dict`). The weights
expect images in the checkpoint's `model.channel_order` ('bgr' for imported
released weights, else 'rgb'); `import_torch` reads both files back
losslessly.

The file is written beside --output under a hidden name and renamed over it
once whole: a full disk or a kill leaves the previous file as it was and no
partial one. Writing either format needs the torch extra
(`pip install -e '.[torch]'`).
"""
import sys

from absl import app
from absl import flags

from dcsfn_jax import cli
from dcsfn_jax.pytorch import torch_files


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir, checkpoint step '
                      'directory or save_pretrained directory.')
  flags.DEFINE_string('output', None,
                      'Weights file to write: *.pth or *.safetensors.')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which step of a training workdir to export.')
  cli.define_weights_flag()
  flags.DEFINE_bool('overwrite', False, 'Replace --output if it exists.')
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help
  flags.mark_flags_as_required(['workdir', 'output'])


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  f = flags.FLAGS
  cli.errors_only_logging()
  try:
    summary = torch_files.export_checkpoint(f.workdir, f.output, f.prefer,
                                            f.overwrite, f.weights)
  except (ValueError, OSError, ImportError) as error:
    sys.exit(f'error: {error}')
  print(summary['weights_note'])
  print(f"Wrote {summary['tensors']} tensors ({summary['values']:,} values) "
        f"to {f.output}; they expect {summary['channel_order'].upper()} "
        'images in [0, 1], NCHW.')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
