"""What EMA and gradient accumulation cost: memory and step time.

  python benchmarks/train_features.py                   # official, 16x64x64
  python benchmarks/train_features.py --accum=1,2,4 --ema=0,0.999 --steps=3

For each (grad_accum_steps, ema_decay) the trainer's own jitted step
(`training.state.make_train_step`) is compiled on one XLA device and run
--steps times on random 64x64 patches. Prints XLA's memory analysis of the
compiled step (temporaries, arguments; the activations live in the
temporaries), the process's peak RSS so far, the compile time and the median
step time.
"""
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np
import optax

from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax.training import config as train_config
from dcsfn_jax.training import schedules
from dcsfn_jax.training import memory
from dcsfn_jax.training import state as state_lib

_PRESET = flags.DEFINE_enum('preset', 'official', list(models.PRESETS),
                            'Model preset.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Global batch (patches).')
_PATCH = flags.DEFINE_integer('patch', 64, 'Patch side.')
_ACCUM = flags.DEFINE_list('accum', ['1', '2', '4'], 'grad_accum_steps values.')
_EMA = flags.DEFINE_list('ema', ['0'], 'ema_decay values.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per setting.')


def _measure(accum, ema):
  config = train_config.base_config(_PRESET.value)
  config.update(patch_size=_PATCH.value, batch_size=_BATCH.value,
                grad_accum_steps=accum, ema_decay=ema)
  mesh = parallel.make_mesh(jax.devices()[:1])
  # As the trainer: remat='auto' resolved for these devices.
  model = models.build_model(memory.resolve_remat(config, mesh.devices.flat)[0])
  schedule = schedules.multistep_lr(5e-4, (1000, 2000))
  optimizer = optax.adam(schedule)
  state = parallel.replicate(state_lib.create_train_state(
      model, optimizer, _PATCH.value, jax.random.key(0), ema=ema > 0), mesh)
  rng = np.random.default_rng(0)
  shape = (_BATCH.value, _PATCH.value, _PATCH.value, 3)
  batch = parallel.shard_batch(
      {'rainy': rng.random(shape, dtype=np.float32),
       'clean': rng.random(shape, dtype=np.float32)}, mesh)
  step = state_lib.make_train_step(model, optimizer, schedule, config, mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  times = []
  for _ in range(_STEPS.value + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f'| {accum} | {ema:g} | {analysis.temp_size_in_bytes / 2**30:.2f} | '
        f'{analysis.argument_size_in_bytes / 2**20:.0f} | {rss_gb:.2f} | '
        f'{compile_s:.1f} | {statistics.median(times[1:]):.2f} |', flush=True)


def main(argv):
  del argv
  print(f'{_PRESET.value}, batch {_BATCH.value} x {_PATCH.value}^2, '
        f'{jax.devices()[0].platform}, 1 device')
  print('| grad_accum_steps | ema_decay | XLA temp GB | arguments MB | peak '
        'RSS so far GB | compile s | step s |')
  print('|---|---|---|---|---|---|---|')
  for accum in map(int, _ACCUM.value):
    for ema in map(float, _EMA.value):
      _measure(accum, ema)


if __name__ == '__main__':
  app.run(main)
