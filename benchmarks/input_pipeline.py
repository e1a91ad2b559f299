r"""Augmented training patches per second from the grain pipeline on this CPU.

  python benchmarks/input_pipeline.py                      # synthetic_rain, 512 px
  python benchmarks/input_pipeline.py --dataset rain100h --data_dir ~/tfds

Prepares the full-size synthetic_rain set into a temporary folder unless
--data_dir already holds --dataset. Prints patches/s for each decoded-example
cache size and thread count (the timed batches span several epochs, so a cache
that holds the split serves most of them) and compares it with what a training step consumes (--step_patches per
--step_seconds; the defaults are the released model's 16-patch step on this
2-core machine, about 10 s).
"""
import tempfile
import time

from absl import app
from absl import flags

from dcsfn_jax.data import load_split
from dcsfn_jax.data import pipeline
from dcsfn_jax.data import prepare_synthetic

_DATASET = flags.DEFINE_string('dataset', 'synthetic_rain', 'Prepared dataset.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'Where --dataset is prepared; default: a temporary '
    'folder with a fresh full-size synthetic_rain.')
_SPLIT = flags.DEFINE_string('split', 'train', 'Split to read.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Global batch size.')
_PATCH_SIZE = flags.DEFINE_integer('patch_size', 64, 'Patch side, px.')
_AUGMENT = flags.DEFINE_enum('augment', 'released', ['released', 'crop'],
                             'Augmentation.')
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 40, 'Timed batches.')
_THREADS = flags.DEFINE_list('threads', ['1', '4'], 'grain reader threads.')
_CACHE_MIB = flags.DEFINE_list(
    'cache_mib', ['0', '1024'], 'Decoded-example cache sizes to time (MiB); '
    '0 decodes every example every time.')
_STEP_PATCHES = flags.DEFINE_float('step_patches', 16,
                                   'Patches one training step consumes.')
_STEP_SECONDS = flags.DEFINE_float('step_seconds', 10.0,
                                   'Seconds one training step takes.')


def patches_per_second(source, num_threads: int, cache_mib: int) -> float:
  iterator = pipeline.train_iterator(
      source, global_batch_size=_BATCH_SIZE.value,
      patch_size=_PATCH_SIZE.value, augment=_AUGMENT.value, seed=0,
      process_index=0, process_count=1, num_threads=num_threads,
      cache_mib=cache_mib)
  next(iterator)  # start-up: threads, first decode
  start = time.perf_counter()
  for _ in range(_NUM_BATCHES.value):
    next(iterator)
  return _NUM_BATCHES.value * _BATCH_SIZE.value / (time.perf_counter() - start)


def run(data_dir) -> None:
  source = load_split(_DATASET.value, _SPLIT.value, data_dir)
  first = source[0]['rainy']
  print(f'{_DATASET.value}/{_SPLIT.value}: {len(source)} examples, first '
        f'{first.shape[0]}x{first.shape[1]}; batch {_BATCH_SIZE.value}, '
        f'{_PATCH_SIZE.value}x{_PATCH_SIZE.value} patches, augment='
        f'{_AUGMENT.value}')
  demand = _STEP_PATCHES.value / _STEP_SECONDS.value
  for cache_mib in map(int, _CACHE_MIB.value):
    for threads in map(int, _THREADS.value):
      rate = patches_per_second(source, threads, cache_mib)
      print(f'  cache {cache_mib:5d} MiB, {threads} thread(s): {rate:8.1f} '
            f'patches/s = {rate / demand:6.0f}x the training step demand '
            f'({demand:.2f} patches/s)')


def main(argv):
  del argv
  if _DATA_DIR.value is not None:
    run(_DATA_DIR.value)
    return
  with tempfile.TemporaryDirectory() as data_dir:
    start = time.perf_counter()
    prepare_synthetic(data_dir)
    print(f'prepared full-size synthetic_rain in '
          f'{time.perf_counter() - start:.1f} s')
    run(data_dir)


if __name__ == '__main__':
  app.run(main)
