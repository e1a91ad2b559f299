r"""Input pipeline speed: host windows per second per core, and the released
augmentation on the device as a fraction of the training step.

  python benchmarks/input_pipeline.py                      # synthetic_rain, 512 px
  python benchmarks/input_pipeline.py --dataset rain100h --data_dir ~/tfds

Prepares the full-size synthetic_rain set into a temporary folder unless
--data_dir already holds --dataset. Prints, on this host:
  * host examples (windows and draws, or 'crop' patches) per second for each
    decoded-example cache size and grain thread count; one thread keeps about
    one core busy, so the 1-thread figure is the rate per core;
  * on JAX's default backend (the GPU/TPU when there is one): the jitted
    augmentation (`data.augment.released_patches`) of one global batch, the
    batch's host-to-device copy, and the trainer's step on that batch (the
    --preset model, augmentation included), with the augmentation's share of
    the step. On CPU the devices are one per core, as the trainer makes them.
"""
import statistics
import tempfile
import time

from absl import app
from absl import flags

from dcsfn_jax import parallel
from dcsfn_jax.data import load_split
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
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 40, 'Timed host batches.')
_THREADS = flags.DEFINE_list('threads', ['1', '4'], 'grain reader threads.')
_CACHE_MIB = flags.DEFINE_list(
    'cache_mib', ['0', '1024'], 'Decoded-example cache sizes to time (MiB); '
    '0 decodes every example every time.')
_PRESET = flags.DEFINE_string('preset', 'official', 'Model of the timed step.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'Compute dtype of the timed step.')
_AUGMENT_REPEATS = flags.DEFINE_integer(
    'augment_repeats', 20, 'Timed runs of the device augmentation (median).')
_STEP_REPEATS = flags.DEFINE_integer(
    'step_repeats', 3, 'Timed train steps (median); 0 skips the step.')


def host_rate(source, num_threads: int, cache_mib: int) -> float:
  """Examples per second out of the grain iterator."""
  from dcsfn_jax.data import pipeline  # pylint: disable=g-import-not-at-top
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


def _median_seconds(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def device_times(source) -> dict:
  """Seconds of the augmentation, the copy and the step on one batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import models  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.data import augment  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import config as train_config  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import memory  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top

  size = _PATCH_SIZE.value
  host_batch = next(pipeline.train_iterator(
      source, global_batch_size=_BATCH_SIZE.value, patch_size=size,
      augment='released', seed=0, process_index=0, process_count=1))
  mesh = parallel.make_mesh()
  copy = lambda: jax.block_until_ready(parallel.shard_batch(host_batch, mesh))
  batch = copy()
  result = {'backend': jax.default_backend(), 'devices': jax.device_count(),
            'device_kind': jax.devices()[0].device_kind,
            'copy_s': _median_seconds(copy, _AUGMENT_REPEATS.value),
            'window_bytes': int(sum(x.nbytes for x in host_batch.values()))}
  augment_fn = jax.jit(lambda b: augment.released_patches(b, size))
  start = time.perf_counter()
  compiled = augment_fn.lower(batch).compile()
  result['augment_compile_s'] = time.perf_counter() - start
  compiled(batch)['rainy'].block_until_ready()
  result['augment_s'] = _median_seconds(
      lambda: compiled(batch)['rainy'].block_until_ready(),
      _AUGMENT_REPEATS.value)
  if _STEP_REPEATS.value < 1:
    return result
  config = train_config.base_config(_PRESET.value)
  config.model.dtype = _DTYPE.value
  config.patch_size = size
  # As the trainer: remat='auto' resolved for these devices.
  model = models.build_model(memory.resolve_remat(config, mesh.devices.flat)[0])
  optimizer = optax.adam(5e-4)
  step = state_lib.make_train_step(model, optimizer, lambda _: 5e-4, config,
                                   mesh)
  state = [parallel.replicate(state_lib.create_train_state(
      model, optimizer, size, jax.random.key(0)), mesh)]
  start = time.perf_counter()
  compiled_step = step.lower(state[0], batch).compile()
  result['step_compile_s'] = time.perf_counter() - start

  def run_step():
    state[0], metrics = compiled_step(state[0], batch)
    metrics['loss'].block_until_ready()

  run_step()  # warm-up
  result['step_s'] = _median_seconds(run_step, _STEP_REPEATS.value)
  result['augment_fraction_of_step'] = result['augment_s'] / result['step_s']
  return result


def run(data_dir) -> None:
  source = load_split(_DATASET.value, _SPLIT.value, data_dir)
  first = source[0]['rainy']
  print(f'{_DATASET.value}/{_SPLIT.value}: {len(source)} examples, first '
        f'{first.shape[0]}x{first.shape[1]}; batch {_BATCH_SIZE.value}, '
        f'{_PATCH_SIZE.value}x{_PATCH_SIZE.value} patches, augment='
        f'{_AUGMENT.value}', flush=True)
  step_s = None
  if _AUGMENT.value == 'released':
    times = device_times(source)
    print(f'on {times["devices"]} {times["backend"]} device(s) '
          f'({times["device_kind"]}), one batch of {_BATCH_SIZE.value}:')
    print(f'  host-to-device copy of the windows ({times["window_bytes"]} '
          f'bytes): {1e3 * times["copy_s"]:8.2f} ms')
    print(f'  augmentation (jitted, alone):          '
          f'{1e3 * times["augment_s"]:8.2f} ms (compiles in '
          f'{times["augment_compile_s"]:.1f} s)')
    if 'step_s' in times:
      step_s = times['step_s']
      print(f'  {_PRESET.value} train step ({_DTYPE.value}, augmentation '
            f'included): {1e3 * step_s:8.1f} ms (compiles in '
            f'{times["step_compile_s"]:.1f} s)')
      print(f'  augmentation / train step: '
            f'{100 * times["augment_fraction_of_step"]:.3f} %', flush=True)
  demand = None if step_s is None else _BATCH_SIZE.value / step_s
  for cache_mib in map(int, _CACHE_MIB.value):
    for threads in map(int, _THREADS.value):
      rate = host_rate(source, threads, cache_mib)
      line = (f'  host, cache {cache_mib:5d} MiB, {threads} thread(s): '
              f'{rate:8.1f} examples/s')
      if threads == 1:
        line += ' (per core)'
      if demand:
        line += f' = {rate / demand:7.0f}x what the step consumes'
      print(line, flush=True)


def main(argv):
  del argv
  parallel.use_host_cores(_BATCH_SIZE.value)
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
