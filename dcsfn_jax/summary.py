r"""Prints a model card: parameters, FLOPs/MACs per image, training memory.

  python -m dcsfn_jax.summary --config configs/rain100h.py[:paper]
  python -m dcsfn_jax.summary --workdir DIR [--height 512 --width 512] \
      [--batch_size 16 --patch_size 64] [--output DIR [--overwrite]]

--config is a config file of configs/ (fields overridable with
--config.FIELD=VALUE, e.g. --config.model.recurrent_unit=LSTM); --workdir is
anything `dcsfn_jax.checkpointing.load_pretrained` reads. The card gives the
parameters per top-level module, the FLOPs (XLA's cost analysis of the
unrolled graph) and MACs of one HEIGHTxWIDTH RGB image, and XLA's memory
analysis of the compiled training gradient (the config's loss) for one batch
of patches; `dcsfn_jax.analysis.card` says how each is counted. Markdown goes
to stdout; --output DIR also writes DIR/model_card.md and
DIR/model_card.json (over existing cards only with --overwrite, and never
over a file it did not write).
About 30 s on 2 CPU cores for the official preset, most of it compiling the
training gradient (--nomemory skips it).
"""
import json
import math
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dcsfn_jax import checkpointing
from dcsfn_jax import cli
from dcsfn_jax import pytorch
from dcsfn_jax import paths
from dcsfn_jax.analysis import card as card_lib
from dcsfn_jax.training import losses

# Each card file and what it starts with, as this command writes it: how
# --overwrite tells an earlier card from a user's file of the same name.
FILES = {'model_card.md': '# DCSFN model card',
         'model_card.json': '{\n  "source": '}


def _define_flags():
  config_flags.DEFINE_config_file(
      'config', None, 'Config file, optionally with a variant: '
      'configs/rain100h.py:paper. Override fields with --config.FIELD=VALUE.',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Instead of --config: a training '
                      'workdir, checkpoint step directory or save_pretrained '
                      'directory.')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which checkpoint of a training workdir to describe.')
  cli.define_weights_flag()
  flags.DEFINE_integer('height', 256, 'Image height for FLOPs and MACs.',
                       lower_bound=1)
  flags.DEFINE_integer('width', 256, 'Image width for FLOPs and MACs.',
                       lower_bound=1)
  flags.DEFINE_integer('batch_size', 16, 'Training batch for the memory '
                       'estimate.', lower_bound=1)
  flags.DEFINE_integer('patch_size', 64, 'Training patch side for the memory '
                       'estimate.', lower_bound=1)
  flags.DEFINE_bool('memory', True, 'Estimate training memory (compiles the '
                    'training gradient).')
  flags.DEFINE_string('output', None, 'Directory for model_card.md and '
                      'model_card.json (default: print only).')
  flags.DEFINE_bool('overwrite', False, 'Replace existing card files in '
                    '--output.')
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help


def _from_config():
  """(config, source) from --config; a file that failed to load exits."""
  config = cli.loaded_config('configs/rain100h.py')
  source = f"config {config_flags.get_config_filename(flags.FLAGS['config'])}"
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  if overrides:
    source += f' with overrides {overrides}'
  return config, source


def _load():
  """(config, params or None, source) from --config or --workdir."""
  f = flags.FLAGS
  if (f.config is None) == (f.workdir is None):
    sys.exit('error: give exactly one of --config (a config file) and '
             '--workdir (a checkpoint).')
  if f.workdir is not None:
    workdir = paths.expand(f.workdir)
    weights, note = checkpointing.choose_weights(workdir, f.weights,
                                                 f.prefer)
    params, config = checkpointing.load_pretrained(workdir, f.prefer, weights)
    return config, params, f'checkpoint {workdir}; {note}'
  config, source = _from_config()
  return config, None, source


def _loss(config):
  """The trainer's loss for `config` as (derained, clean) -> scalar, and its
  name."""
  padding = config.get('ssim_padding', 'same')
  l1_weight = config.get('l1_weight', 0.0)

  def loss_fn(derained, clean):
    return losses.derain_loss(derained, clean, ssim_padding=padding,
                              l1_weight=l1_weight)[0]

  name = f'-SSIM ({padding} padding)'
  if l1_weight:
    name += f' + {l1_weight} x L1'
  return loss_fn, name


def _write(output, overwrite, markdown, card):
  os.makedirs(output, exist_ok=True)
  mode = 'w' if overwrite else 'x'
  for name, text in zip(FILES, (markdown, json.dumps(card, indent=2) + '\n')):
    with open(os.path.join(output, name), mode, encoding='utf-8') as file:
      file.write(text)


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  f = flags.FLAGS
  cli.errors_only_logging()
  output = paths.expand(f.output)
  try:
    if output:
      paths.check_text_outputs(output, f.overwrite, FILES)
    config, params, source = _load()
    if 'model' not in config:
      raise ValueError(f'{source} has no `model` field; it is not a '
                       'training config.')
    model_config = config.model
    loss_fn, loss_name = _loss(config) if f.memory else (None, '')
    released = sum(math.prod(shape) for shape in
                   pytorch.torch_state_dict_shapes(model_config).values())
    card = card_lib.model_card(
        model_config, loss_fn=loss_fn, loss_name=loss_name, params=params,
        height=f.height, width=f.width, batch_size=f.batch_size,
        patch_size=f.patch_size, released_parameters=released, source=source)
    markdown = card_lib.to_markdown(card)
    print(markdown)
    if output:
      _write(output, f.overwrite, markdown, card)
  except (ValueError, OSError) as error:
    sys.exit(f'error: {error}')
  if output:
    markdown_file, json_file = FILES
    print(f'Wrote {os.path.join(output, markdown_file)} and {json_file}.')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
