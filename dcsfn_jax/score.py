r"""Scores the saved outputs of any deraining method under named protocols.

  python -m dcsfn_jax.score --derained DIR --clean DIR [--rainy DIR] \
      [--protocol official,y_uint8,y_float] [--crop_border N] [--output DIR] \
      [--dataset rain100h [--split test]]

Reads what Restormer, DRSformer, MPRNet, BasicSR or `evaluate` saved (PNG,
JPEG, BMP; 8- or 16-bit: 16-bit PNGs, gray or colour, are rounded to 8 bits
as MATLAB's im2uint8 does, round(v / 257)), pairs each output with its
ground truth by file name and scores the pairs with the evaluator `evaluate`
uses. Protocols (`dcsfn_jax.metrics.PROTOCOL_DESCRIPTIONS`):

  official  the released eval.py: RGB PSNR and zero-padded SSIM. On saved
            PNGs it scores the clipped, rounded output; `evaluate` scores
            the float one (its SSIM even unclipped), so its 'official'
            figures differ by exactly that rounding and clipping.
  y_uint8   MATLAB evaluate_PSNR_SSIM.m (MPRNet, Restormer, DRSformer's
            Rain200H/L): uint8 Y channel, 'valid' SSIM.
  y_float   DRSformer/RCDNet statistic.m (DID-Data/Rain1200,
            DDN-Data/Rain1400): unrounded double Y, PSNR peak 1, MATLAB's
            built-in ssim (replicate padding, DynamicRange 1).

Matching (first rule that pairs every file of both folders one to one):
  1. identical stems: results/Rain100H/1.png <-> target/1.png (Restormer,
     MPRNet, DRSformer save each output under its input's stem);
  2. naming conventions, ignoring role words and leading zeros:
     rain-001 <-> norain-001 (PReNet), 1_DR <-> 1_GT (DRSformer's
     DID/DDN results, both in one folder: pass it as --derained and
     --clean), NAME_derained/_out/_pred/_restored <-> NAME_gt/_clean/_target;
  3. the same after dropping a suffix every output shares: BasicSR's
     NAME_{suffix}.png <-> NAME.png.
Otherwise the error names the first unmatched files of each side. A folder
with no images of its own is read from its target/ (or targets/, gt/) or,
for --rainy, input/ subfolder, so --clean Datasets/test/Rain100H works.

--crop_border N crops N pixels from every border of every image before
scoring, under every protocol (BasicSR's crop_border). --rainy adds the
rainy inputs' scores as the baseline columns; without it the report has
none. --dataset/--split (catalog names, e.g. rain13k/test100) label the
report and add the published DCSFN figures for them with the gap.

Writes to --output (default DERAINED_score beside the outputs' folder, checked
before anything is read): per_image.csv, summary.json and results.md, as
`evaluate` does, and prints the means and every image's figures (the lowest
and highest few for large sets).
"""
import os
import sys

from absl import app
from absl import flags

from dcsfn_jax import cli
from dcsfn_jax import compile_cache
from dcsfn_jax import metrics
from dcsfn_jax import parallel
from dcsfn_jax.evaluation import report
from dcsfn_jax.evaluation import scoring


def _define_flags():
  cli.define_compile_cache_flag()
  flags.DEFINE_string('derained', None, 'Folder of the outputs to score '
                      '(PNG, JPEG, BMP; 8- or 16-bit).')
  flags.DEFINE_string('clean', None, 'Folder of the ground truth (or a '
                      'dataset folder with a target/ subfolder).')
  flags.DEFINE_string('rainy', None, 'Optional folder of the rainy inputs '
                      '(or a dataset folder with input/): their scores are '
                      'the baseline columns.')
  flags.DEFINE_list('protocol', list(metrics.PROTOCOLS),
                    metrics.PROTOCOLS_HELP)
  flags.DEFINE_integer('crop_border', 0, 'Pixels cropped from every border '
                       'of both images before scoring, for every protocol.')
  flags.DEFINE_string('output', None, 'Output folder (default: '
                      'DERAINED_score beside --derained).')
  flags.DEFINE_string('dataset', None, 'Catalog name of the test set (e.g. '
                      'rain100h, rain13k): labels the report and adds the '
                      'published DCSFN figures for it.')
  flags.DEFINE_string('split', None, 'Split of --dataset (default test; '
                      'rain13k: test100, rain100h, rain100l, test2800, '
                      'test1200).')
  cli.define_batch_size_flag('images')
  flags.DEFINE_bool('overwrite', False, 'Write into a non-empty --output, '
                    'replacing only the files of an earlier report.')
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help
  flags.mark_flag_as_required('derained')
  flags.mark_flag_as_required('clean')
  flags.adopt_module_key_flags(cli)  # its flags in this command's --help


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  compile_cache.enable(flags.FLAGS.compile_cache)  # before any compile
  f = flags.FLAGS
  parallel.use_host_cores()
  cli.errors_only_logging()
  try:
    summary = scoring.score_folders(
        f.derained, f.clean, rainy_dir=f.rainy, protocols=f.protocol,
        crop_border=f.crop_border, output_dir=f.output, dataset=f.dataset,
        split=f.split, batch_size=f.batch_size, overwrite=f.overwrite)
  except (ValueError, OSError) as error:
    sys.exit(f'error: {error}')
  print(report.markdown_table(summary, scoring.title(summary)))
  print('\n'.join(report.per_image_table(
      report.read_rows(summary['output_dir']), summary,
      os.path.join(summary['output_dir'], 'per_image.csv'))))
  print(f"{summary['num_images']} image(s) in {summary['seconds']} s "
        f"({summary['compilations']} compilation(s) on {summary['devices']} "
        f"device(s)); results in {summary['output_dir']}")


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
