r"""Writes a deraining dataset as tfds array_record files.

  python -m dcsfn_jax.data.prepare --dataset rain100h --manual_dir ~/Rain100H
  python -m dcsfn_jax.data.prepare --dataset synthetic_rain --data_dir /tmp/data

`--manual_dir` is the unpacked download; `--instructions` prints where a
dataset comes from and which layouts are accepted. synthetic_rain needs no
download; its `--manual_dir`, if given, is a folder of clean photos. Ends with
a summary: pairs per split, size range, and where the data went.
"""
from absl import app
from absl import flags
from dcsfn_jax.data import tfds_builder
from dcsfn_jax.data import preparation
from dcsfn_jax.data import catalog
from dcsfn_jax.data.layouts import DatasetLayoutError

_DATASET = flags.DEFINE_enum('dataset', 'synthetic_rain', list(catalog.SPECS),
                             'Dataset (tfds config) to prepare.')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder holding the downloaded files; default '
    '<data_dir>/downloads/manual/<dataset>. For synthetic_rain: an optional '
    "folder of clean photos instead of scikit-image's.")
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where the tfds dataset is written (default: tfds '
    'default, ~/tensorflow_datasets or $TFDS_DATA_DIR).')
_INSTRUCTIONS = flags.DEFINE_bool(
    'instructions', False, "Print the dataset's download instructions and "
    'accepted layouts, then exit.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Rebuild even if the dataset already exists.')
_MAX_SIZE = flags.DEFINE_integer('max_size', tfds_builder.SyntheticOptions.max_size,
                                 'synthetic_rain: longer photo side, px.')
_NUM_TRAIN = flags.DEFINE_integer('num_train',
                                  tfds_builder.SyntheticOptions.num_train,
                                  'synthetic_rain: train pairs.')
_NUM_TEST = flags.DEFINE_integer('num_test', tfds_builder.SyntheticOptions.num_test,
                                 'synthetic_rain: test pairs.')
_SEED = flags.DEFINE_integer('seed', tfds_builder.SyntheticOptions.seed,
                             'synthetic_rain: seed of the streaks.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _INSTRUCTIONS.value:
    print(catalog.SPECS[_DATASET.value].instructions)
    return
  options = tfds_builder.SyntheticOptions(
      max_size=_MAX_SIZE.value, num_train=_NUM_TRAIN.value,
      num_test=_NUM_TEST.value, seed=_SEED.value)
  try:
    builder = preparation.prepare(_DATASET.value, manual_dir=_MANUAL_DIR.value,
                      data_dir=_DATA_DIR.value, synthetic_options=options,
                      overwrite=_OVERWRITE.value)
  except DatasetLayoutError as error:
    raise SystemExit(f'error: {error}') from error
  print(f'\n{_DATASET.value} is in {builder.data_dir}')
  for split, stats in preparation.summarize(builder).items():
    (min_h, min_w), (max_h, max_w) = stats['min_size'], stats['max_size']
    print(f'  {split:>10}: {stats["pairs"]:6d} pairs, sizes (H x W) from '
          f'{min_h}x{min_w} to {max_h}x{max_w}')
    if split == 'train_1254' and stats['pairs'] != 1254:
      print(f'  note: train_1254 has {stats["pairs"]} pairs, not 1254; see '
            'the train_1254 notes of --instructions and add '
            'train_1254.txt to the manual folder to fix the split.')


if __name__ == '__main__':
  app.run(main)
