r"""Evaluates a checkpoint on a paired test set under named PSNR/SSIM protocols.

  python -m dcsfn_jax.evaluate --workdir DIR [--dataset rain100h --split test] \
      [--protocol official,y_uint8] [--bucket] [--output DIR]

DIR is a training workdir (latest checkpoint, or --prefer=best), one step
directory, or a save_pretrained directory such as one written by
`python -m dcsfn_jax.import_torch` from the released PyTorch weights.
Dataset, split and data_dir default to those the checkpoint was trained with.

Writes to --output (default DIR/eval/DATASET-SPLIT for a training workdir,
DIR_eval/DATASET-SPLIT beside a checkpoint directory): per_image.csv,
summary.json, results.md, derained/*.png and panels/*.png
(`dcsfn_jax.evaluation.report`), and prints the means, then every image's
figures (the lowest and highest few for large sets). --overwrite replaces
only files an earlier run wrote. Every image runs at its native size, as the
released eval.py does, compiling once per new size; --bucket pads to a few
shape buckets instead, which is faster on many sizes but changes the outputs.
"""
import os
import sys

from absl import app
from absl import flags

from dcsfn_jax import cli
from dcsfn_jax import compile_cache
from dcsfn_jax import metrics
from dcsfn_jax import parallel
from dcsfn_jax.evaluation import evaluator
from dcsfn_jax.evaluation import report


def _define_flags():
  cli.define_compile_cache_flag()
  flags.DEFINE_string('workdir', None, 'Training workdir, checkpoint step '
                      'directory or save_pretrained directory.')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which checkpoint of a training workdir to evaluate.')
  cli.define_weights_flag()
  flags.DEFINE_string('dataset', None, 'Dataset name, e.g. rain100h '
                      '(default: the checkpoint config\'s dataset).')
  flags.DEFINE_string('split', None, 'Split to evaluate (default: the '
                      'config\'s eval_split, else test).')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: the '
                      'config\'s data_dir).')
  flags.DEFINE_list('protocol', list(metrics.PROTOCOLS),
                    metrics.PROTOCOLS_HELP)
  flags.DEFINE_string('output', None, 'Output directory (default: '
                      'WORKDIR/eval/DATASET-SPLIT, or CHECKPOINT_eval/'
                      'DATASET-SPLIT for a checkpoint directory).')
  cli.define_model_run_flags('images')
  flags.DEFINE_bool('panels', True, 'Write rainy|derained|clean|error '
                    'panels.')
  flags.DEFINE_integer('limit', None, 'Evaluate only the first N images '
                       '(N >= 1).')
  flags.DEFINE_bool('overwrite', False, 'Write into a non-empty --output.')
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help
  flags.mark_flag_as_required('workdir')


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  compile_cache.enable(flags.FLAGS.compile_cache)  # before any compile
  f = flags.FLAGS
  parallel.use_host_cores()
  cli.errors_only_logging()
  try:
    summary = evaluator.evaluate_checkpoint(
        f.workdir, dataset=f.dataset, split=f.split, data_dir=f.data_dir,
        protocols=f.protocol, bucket=f.bucket, output_dir=f.output,
        prefer=f.prefer, batch_size=f.batch_size, panels=f.panels,
        limit=f.limit, overwrite=f.overwrite, weights=f.weights,
        self_ensemble=f.self_ensemble,
        progress=sys.stderr.isatty())  # no bars in captured logs
  except (ValueError, OSError) as error:
    sys.exit(f'error: {error}')
  print(summary['weights_note'])
  print(report.markdown_table(summary,
                              f"{summary['dataset']}/{summary['split']}"))
  print('\n'.join(report.per_image_table(
      report.read_rows(summary['output_dir']), summary,
      os.path.join(summary['output_dir'], 'per_image.csv'))))
  print(f"{summary['compilations']} compilation(s) on {summary['devices']} "
        f"device(s), {summary['seconds']} s; results in "
        f"{summary['output_dir']}")


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
