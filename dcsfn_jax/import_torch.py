r"""Turns PyTorch DCSFN weights into a project checkpoint.

  python -m dcsfn_jax.import_torch --checkpoint latest_net \
      --output /tmp/dcsfn_official [--preset official] \
      [--model_override recurrent_unit=LSTM ...]

The checkpoint may be the released training file, a plain state_dict (.pth)
or a file written by `python -m dcsfn_jax.export` (whose recorded model
config and channel order are then used). Files are read with
`torch.load(..., weights_only=True)`, which never runs pickled code. Weights
without a recorded config are taken as the authors' release: the preset run
on BGR images (channel_order='bgr'), edited by --model_override. The result
runs on RGB images like any project checkpoint:

  params, config = dcsfn_jax.checkpointing.load_pretrained('/tmp/dcsfn_official')
"""
import sys

from absl import app
from absl import flags

from dcsfn_jax import cli
from dcsfn_jax import models
from dcsfn_jax.pytorch import torch_files


def _define_flags():
  flags.DEFINE_string('checkpoint', None, 'Released PyTorch checkpoint '
                      '(latest_net, net_N_epoch), a .pth state_dict or a '
                      '.pth/.safetensors export.')
  flags.DEFINE_string('output', None,
                      'New directory for the project checkpoint.')
  flags.DEFINE_enum('preset', 'official', list(models.PRESETS),
                    'Model preset of weights that record no config '
                    '(their channel_order becomes bgr).')
  flags.DEFINE_multi_string('model_override', [],
                            'field=value edits of the preset, e.g. '
                            'recurrent_unit=LSTM or cross_scale=false; '
                            'repeat for several.')
  flags.mark_flags_as_required(['checkpoint', 'output'])


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  f = flags.FLAGS
  cli.errors_only_logging()
  try:
    summary = torch_files.import_torch_checkpoint(
        f.checkpoint, f.output, f.preset, f.model_override)
  except (ValueError, OSError, ImportError) as error:
    sys.exit(f'error: {error}')
  print(f"Read {summary['tensors_read']} tensors from {f.checkpoint}; wrote "
        f"{summary['params_written']:,} parameters to {f.output} "
        f"(channel_order={summary['model_config'].channel_order!r}, "
        f"{summary['channel_order_source']}).")


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
