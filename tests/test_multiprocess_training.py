"""`python -m dcsfn_jax.train` as two JAX processes, for real, on localhost.

Two processes with two simulated CPU devices each join through a coordinator
on 127.0.0.1, the path that TPU pods, multi-node GPU runs and SLURM take. They
train, checkpoint through orbax, stop, and resume. Their parameters must equal
those of one process with four devices trained on the same global batches.
That equality also shows that each process fed its own part of every batch:
had two processes read the same part, the global batch would differ.

The learning rate is constant here (lr_decay_factor=1), so that a run stopped
at step 2 and resumed to step 4 follows the same schedule as one that runs to
step 4 straight.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import data

_REPO = pathlib.Path(__file__).resolve().parents[1]
# configs/demo.py:smoke (the smallest network: what is under test is the
# multi-process run), with a constant learning rate (see above), a line per
# step, and a batch of 8 = 2 per device.
_CONFIG = [f'--config={_REPO / "configs" / "demo.py"}:smoke',
           '--config.lr_decay_factor=1.0', '--config.log_every_steps=1',
           '--config.batch_size=8']

# Generous: the first run compiles; a stuck coordinator must not hang CI.
_TIMEOUT_S = 300


@pytest.fixture
def data_dir(tmp_path):
  return data.prepare_synthetic(tmp_path / 'tfds', max_size=64, num_train=16,
                                num_test=2)


def _free_port():
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _environment(devices, compilation_cache, **variables):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_', 'SLURM_', 'OMPI_'))}
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  # Fast compiles, and the resumed launch reuses the first one's programs.
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
  env['JAX_COMPILATION_CACHE_DIR'] = str(compilation_cache)
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env.update({k: str(v) for k, v in variables.items()})
  return env


def _train(data_dir, workdir, *, processes, devices_per_process,
           total_steps):
  """Runs the trainer CLI as `processes` processes; fails if any fails."""
  command = [sys.executable, '-m', 'dcsfn_jax.train', *_CONFIG,
             f'--config.data_dir={data_dir}', f'--workdir={workdir}',
             f'--config.total_steps={total_steps}']
  cache = workdir.parent / 'compilation_cache'
  if processes == 1:
    envs = [_environment(devices_per_process, cache)]
  else:
    address = f'127.0.0.1:{_free_port()}'
    envs = [_environment(devices_per_process, cache,
                         JAX_COORDINATOR_ADDRESS=address,
                         JAX_NUM_PROCESSES=processes, JAX_PROCESS_ID=index)
            for index in range(processes)]
  # Files, not pipes: a process blocked on a full pipe would stall the other
  # at the next collective.
  logs = [workdir.parent / f'{workdir.name}.process{index}.log'
          for index in range(processes)]
  running = []
  for env, log in zip(envs, logs):
    with open(log, 'w') as output:
      running.append(subprocess.Popen(command, env=env, stdout=output,
                                      stderr=subprocess.STDOUT))
  try:
    for process in running:
      process.wait(timeout=_TIMEOUT_S)
  finally:
    for process in running:
      if process.poll() is None:
        process.kill()
        process.wait()
  for index, (process, log) in enumerate(zip(running, logs)):
    assert process.returncode == 0, (
        f'process {index} of {processes} exited {process.returncode}:\n'
        f'{log.read_text()[-4000:]}')


def _params(checkpoint_dir):
  params, _ = checkpointing.load_pretrained(checkpoint_dir)
  return jax.tree.map(np.asarray, params)


def _max_difference(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return max(float(np.max(np.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _logged_steps(workdir):
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line)['step'] for line in lines
          if 'train/loss' in json.loads(line)]


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume_like_one_with_four_devices(
    data_dir, tmp_path):
  single = tmp_path / 'one_process_four_devices'
  multi = tmp_path / 'two_processes_two_devices_each'

  _train(data_dir, single, processes=1, devices_per_process=4,
         total_steps=4)
  _train(data_dir, multi, processes=2, devices_per_process=2,
         total_steps=2)

  steps = sorted(int(p.name) for p in (multi / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [2], f'the two processes left checkpoints {steps}'
  difference = _max_difference(_params(multi / 'checkpoints/2'),
                               _params(single / 'checkpoints/2'))
  assert difference <= 1e-6, (
      f'after 2 steps, 2 processes x 2 devices differ from 1 process x 4 '
      f'devices by {difference}')

  _train(data_dir, multi, processes=2, devices_per_process=2,
         total_steps=4)

  difference = _max_difference(_params(multi / 'checkpoints/4'),
                               _params(single / 'checkpoints/4'))
  assert difference <= 1e-6, (
      f'stopped at step 2 and resumed to 4, 2 processes differ from 1 '
      f'process trained straight to step 4 by {difference}')
  # Resumed at step 3, and process 0 alone logs: each step once, one event
  # file per launch.
  assert _logged_steps(multi) == [1, 2, 3, 4]
  assert len(list((multi / 'tensorboard').iterdir())) == 2
  assert len(list((multi / 'panels').iterdir())) == 2  # evals at steps 2, 4
