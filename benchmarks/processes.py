"""The training step as N processes x 1 device against 1 process x N devices.

  python benchmarks/processes.py                 # official, 16x64x64, N = 2
  python benchmarks/processes.py --smoke         # tiny model (seconds)

Both layouts run the trainer's own step (training.state.make_train_step) on
the same global batch, with the same mesh of N CPU devices: either one
process with N XLA host devices, or N processes of one device each joined
through a coordinator on 127.0.0.1 (the multi-process path that
tests/test_multiprocess_training.py checks), whose gradient all-reduce then
crosses processes. Each layout runs alone, after the other, and reports the
median step time of --repeats steps after one warm-up step, its compile time
and the peak RSS of its processes (summed).
"""
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_DEVICES = flags.DEFINE_integer('devices', 2, 'N: devices in all.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed steps (median).')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny model and batch.')
_WORKER = flags.DEFINE_string('worker', None,
                              'Internal: "PROCESS_ID/PROCESSES/PORT".')

BATCH, PATCH = 16, 64


def _worker(spec):
  process_id, processes, port = (int(v) for v in spec.split('/'))
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import models, parallel  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import config as train_config  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import memory  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top

  if processes > 1:
    parallel.initialize_distributed(f'127.0.0.1:{port}', processes,
                                    process_id)
  config = train_config.base_config()
  config.batch_size, config.patch_size = BATCH, PATCH
  if _SMOKE.value:
    config.model.update(channels=4, num_blocks=2, num_scales=2,
                        convs_per_scale=1)
    config.batch_size, config.patch_size = 2 * _DEVICES.value, 16
  mesh = parallel.make_mesh()
  model = models.build_model(memory.resolve_remat(config)[0])
  optimizer = optax.adam(5e-4)
  step_fn = state_lib.make_train_step(model, optimizer, lambda _: 5e-4,
                                      config, mesh)
  state = parallel.replicate(state_lib.create_train_state(
      model, optimizer, config.patch_size, jax.random.key(0)), mesh)
  rng = np.random.default_rng(0)
  shape = (config.batch_size, config.patch_size, config.patch_size, 3)
  full = {name: rng.random(shape, dtype=np.float32)
          for name in ('rainy', 'clean')}
  share = config.batch_size // processes
  batch = parallel.shard_batch(
      {k: v[process_id * share:(process_id + 1) * share]
       for k, v in full.items()}, mesh)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(json.dumps({'times_s': times, 'compile_s': compile_s,
                    'peak_rss_gb': rss_gb,
                    'loss': float(metrics['loss'])}), flush=True)


def _free_port():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _run(processes, devices_each):
  """Runs the layout; returns the workers' reports."""
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}
  env['XLA_FLAGS'] = (f'{env.get("XLA_FLAGS", "")} --xla_force_host_platform_'
                      f'device_count={devices_each}').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  port = _free_port()
  workers = [subprocess.Popen(
      [sys.executable, os.path.abspath(__file__),
       f'--worker={i}/{processes}/{port}', f'--devices={_DEVICES.value}',
       f'--repeats={_REPEATS.value}', '--smoke' if _SMOKE.value else
       '--nosmoke'], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(processes)]
  reports = []
  for worker in workers:
    out, _ = worker.communicate(timeout=1800)
    if worker.returncode:
      sys.exit(f'error: a worker of the {processes}-process layout failed '
               f'(exit code {worker.returncode}); see its stderr above.')
    reports.append(json.loads(out.strip().splitlines()[-1]))
  return reports


def main(argv):
  del argv
  if _WORKER.value:
    _worker(_WORKER.value)
    return
  count = _DEVICES.value
  rows = []
  for name, processes, devices_each in (
      (f'1 process x {count} devices', 1, count),
      (f'{count} processes x 1 device', count, 1)):
    reports = _run(processes, devices_each)
    # A step ends when the slowest process has its metrics.
    steps = [max(r['times_s'][i] for r in reports)
             for i in range(_REPEATS.value)]
    rows.append((name, statistics.median(steps),
                 max(r['compile_s'] for r in reports),
                 sum(r['peak_rss_gb'] for r in reports), reports[0]['loss']))
  print(f'\n{"tiny" if _SMOKE.value else "official"} preset, batch '
        f'{BATCH if not _SMOKE.value else 2 * count}, load average '
        f'{os.getloadavg()[0]:.1f} after\n')
  print('| layout | step s (median) | compile s | peak RSS GB (sum) | loss |')
  print('|---|---|---|---|---|')
  for name, step, compile_s, rss, loss in rows:
    print(f'| {name} | {step:.2f} | {compile_s:.1f} | {rss:.2f} | '
          f'{loss:.6f} |')


if __name__ == '__main__':
  app.run(main)
