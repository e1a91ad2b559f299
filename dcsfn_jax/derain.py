r"""Derains your own photos with a trained or imported DCSFN.

  python -m dcsfn_jax.derain --workdir DIR --input PHOTO_OR_FOLDER \
      --output OUT [--tile 512] [--panels] [--niqe] [--overwrite]
  python -m dcsfn_jax.derain --torch-checkpoint latest_net --input ... \
      --output OUT

--workdir takes any project checkpoint (training workdir, step directory or
save_pretrained directory); --torch-checkpoint takes the released PyTorch
weights or a .pth/.safetensors export directly.

Writes OUT/NAME.png (derained, 8-bit RGB, the network's output at the photo's
own size), with --panels OUT/panels/NAME.png (input | derained), and with
--niqe OUT/niqe.csv plus NIQE before/after on the terminal (Y channel, no
border crop; lower is more natural). Unreadable or oversized files are
reported by name and skipped; the rest continue, and the exit status is then
non-zero. Weights that record no model config are taken as the authors'
release (BGR), which a `note:` line says. OUT may not be, lie inside or
contain the input folder; existing outputs are replaced only with
--overwrite, and only if this project wrote them.
"""
import sys

from absl import app
from absl import flags

from dcsfn_jax import cli
from dcsfn_jax import compile_cache
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import paths
from dcsfn_jax.inference import derainer


def _define_flags():
  cli.define_compile_cache_flag()
  flags.DEFINE_string('workdir', None, 'Project checkpoint: training '
                      'workdir, step directory or save_pretrained directory.')
  flags.DEFINE_string('torch_checkpoint', None, 'Released PyTorch weights '
                      '(latest_net, net_N_epoch), .pth or .safetensors.')
  flags.DEFINE_alias('torch-checkpoint', 'torch_checkpoint')
  flags.DEFINE_enum('preset', 'official', list(models.PRESETS),
                    'Architecture of --torch-checkpoint weights that record '
                    'no model config (the authors\' release).')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which checkpoint of a training workdir to use.')
  cli.define_weights_flag()
  flags.DEFINE_string('input', None, 'A photo or a folder of photos.')
  flags.DEFINE_string('output', None, 'Folder for the derained PNGs '
                      '(outside the input folder).')
  flags.DEFINE_integer('tile', None, 'Cut photos larger than this many '
                       'pixels per side into overlapping tiles (bounded '
                       'memory); rounded down to the model\'s size step.')
  flags.DEFINE_integer('tile_overlap', None, 'Overlap of neighbouring '
                       'tiles in pixels (default tile/4).')
  flags.DEFINE_integer('max_pixels', derainer.DEFAULT_MAX_PIXELS, 'Refuse '
                       'photos with more pixels than this (read from the '
                       'header, before decoding); 0 for no limit. Use --tile '
                       'for large photos.')
  cli.define_model_run_flags('tiles')
  flags.DEFINE_bool('panels', False, 'Also write input|derained panels.')
  flags.DEFINE_bool('niqe', False, 'Report NIQE before and after '
                    '(Y channel, crop_border 0) and write niqe.csv.')
  flags.DEFINE_bool('overwrite', False, 'Replace outputs of an earlier run '
                    '(never other files).')
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help
  flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  compile_cache.enable(flags.FLAGS.compile_cache)  # before any compile
  f = flags.FLAGS
  parallel.use_host_cores()
  cli.errors_only_logging()
  output = paths.expand(f.output)
  try:
    if f.max_pixels < 0:
      raise ValueError(f'--max_pixels={f.max_pixels} must be >= 0.')
    inputs = derainer.list_inputs(f.input)
    derainer.check_output_location(f.input, output)
    if f.niqe:
      derainer.check_niqe_csv(output, f.overwrite)
    notes = []
    params, model_config = derainer.load_model(
        f.workdir, f.torch_checkpoint, f.preset, f.prefer, notes=notes,
        weights=f.weights)
    model = derainer.Derainer(params, model_config, tile=f.tile,
                              overlap=f.tile_overlap,
                              batch_size=f.batch_size, bucket=f.bucket,
                              self_ensemble=f.self_ensemble)
  except (ValueError, OSError, ImportError) as error:
    sys.exit(f'error: {error}')
  for note in notes:  # the weights used, or the channel order assumed
    print(note)
  results = derainer.derain_files(
      model, inputs, output, panels=f.panels, with_niqe=f.niqe,
      overwrite=f.overwrite, max_pixels=f.max_pixels,
      progress=sys.stderr.isatty())  # no bars in captured logs
  if f.niqe and any(not r.error for r in results):
    try:
      derainer.write_niqe_csv(output, results)
    except OSError as error:
      sys.exit(f'error: {error}')
  print('\n'.join(derainer.summarise(results, f.niqe, output)))
  if any(r.error for r in results):
    sys.exit(f'error: {derainer.failures(results)}')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
