r"""Writes a deraining dataset as tfds array_record files.

  python -m dcsfn_jax.prepare --dataset rain100h --manual_dir ~/Rain100H
  python -m dcsfn_jax.prepare --dataset synthetic_rain --data_dir /tmp/data

`--manual_dir` is the unpacked download; `--instructions` prints where a
dataset comes from and which layouts are accepted. synthetic_rain needs no
download; its `--manual_dir`, if given, is a folder of clean photos. `~` and
$VARS are expanded in --manual_dir and --data_dir.

`--layout auto` (the default) reads the layouts --instructions lists, and
side-by-side images only for the datasets distributed that way, and only
where the names do not pair up (rainy_N.png with clean_N.png);
`--layout side_by_side` reads every split folder as side-by-side pairs.

A dataset already in --data_dir is reused if it was built from the same
--manual_dir and, for synthetic_rain, with the same --max_size, --num_train,
--num_test and --seed (all recorded in prepared_from.json in its version
folder); otherwise the command stops: pass --overwrite to rebuild. A rebuild
is written beside the prepared dataset and replaces it only once complete,
so a failed, killed or out-of-space rebuild leaves the old one as it was.
Folders left by killed builds (<data_dir>/derain/<dataset>/incomplete.*) are
removed.

Ends with a summary: pairs (images, for real_rain) per split, size range, and
where the data went and came from. A failure is one `error:` line on stderr
naming the file or flag and the fix (sometimes followed by details), exit 1.
"""
from absl import app
from absl import flags

from dcsfn_jax import cli
from dcsfn_jax import paths
from dcsfn_jax.data import catalog
from dcsfn_jax.data import preparation
from dcsfn_jax.data import tfds_builder
from dcsfn_jax.data.layouts import PrepareError


def _define_flags():
  defaults = tfds_builder.SyntheticOptions()
  shipped = ', '.join(name for name, spec in catalog.SPECS.items()
                      if spec.ships_side_by_side)
  flags.DEFINE_enum('dataset', 'synthetic_rain', list(catalog.SPECS),
                    'Dataset (tfds config) to prepare.')
  flags.DEFINE_string(
      'manual_dir', None, 'Folder holding the downloaded files; default '
      '<data_dir>/downloads/manual/<dataset>. For synthetic_rain: an optional '
      "folder of clean photos instead of scikit-image's.")
  flags.DEFINE_string(
      'data_dir', None, 'Where the tfds dataset is written (default: tfds '
      'default, ~/tensorflow_datasets or $TFDS_DATA_DIR).')
  flags.DEFINE_enum(
      'layout', 'auto', catalog.LAYOUT_MODES,
      'How split folders are read. auto: the layouts --instructions lists; '
      f'side-by-side images only for {shipped} (distributed that way), and '
      'not where names pair up (rainy_N.png with clean_N.png). side_by_side: '
      'every split folder holds side-by-side pairs, the clean half on the '
      "dataset's side (see --instructions).")
  flags.DEFINE_bool(
      'instructions', False, "Print the dataset's download instructions and "
      'accepted layouts, then exit.')
  flags.DEFINE_bool(
      'overwrite', False, 'Rebuild even if the dataset already exists '
      '(needed to rebuild it from another --manual_dir).')
  flags.DEFINE_integer('max_size', defaults.max_size,
                       'synthetic_rain: longer photo side, px (>= 1).')
  flags.DEFINE_integer('num_train', defaults.num_train,
                       'synthetic_rain: train pairs (>= 1).')
  flags.DEFINE_integer('num_test', defaults.num_test,
                       'synthetic_rain: test pairs (>= 1).')
  flags.DEFINE_integer('seed', defaults.seed,
                       'synthetic_rain: seed of the streaks (>= 0).')


def _print_summary(builder) -> None:
  dataset = builder.builder_config.name
  unit = 'pairs' if catalog.SPECS[dataset].paired else 'images'
  print(f'\n{dataset} is in {builder.data_dir}, made from '
        f'{preparation.source_of(builder)}')
  for split, stats in preparation.summarize(builder).items():
    (min_h, min_w), (max_h, max_w) = stats['min_size'], stats['max_size']
    print(f'  {split:>10}: {stats["examples"]:6d} {unit}, sizes (H x W) from '
          f'{min_h}x{min_w} to {max_h}x{max_w}')
    if split == 'train_1254' and stats['examples'] != 1254:
      print(f'  note: train_1254 has {stats["examples"]} pairs, not 1254; see '
            'the train_1254 notes of --instructions and add '
            'train_1254.txt to the manual folder to fix the split.')


def main(argv):
  del argv  # cli.flags_parser refuses stray arguments
  f = flags.FLAGS
  cli.warnings_and_errors_logging()
  if f.instructions:
    print(catalog.SPECS[f.dataset].instructions)
    return
  try:
    options = tfds_builder.SyntheticOptions(
        max_size=f.max_size, num_train=f.num_train, num_test=f.num_test,
        seed=f.seed)
    builder = preparation.prepare(
        f.dataset, manual_dir=paths.expand(f.manual_dir),
        data_dir=paths.expand(f.data_dir), synthetic_options=options,
        overwrite=f.overwrite, layout=f.layout)
    _print_summary(builder)
  except PrepareError as error:
    raise SystemExit(f'error: {error}') from error


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser())
