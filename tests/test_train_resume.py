"""Killed mid-run with SIGKILL and restarted, training ends where an
uninterrupted run ends, bit for bit on CPU: nothing lost, nothing repeated.
The run keeps a moving average and accumulates gradients over 2
micro-batches, so both resume exactly too."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dcsfn_jax import checkpointing

# Every run compiles the same smoke programs: the first run's are reused
# (conftest.shared_compile_cache).
pytestmark = pytest.mark.usefixtures('shared_compile_cache')

_REPO = pathlib.Path(__file__).resolve().parents[1]
_TOTAL_STEPS = 24
_TIMEOUT_S = 300


def _command(workdir, data_dir):
  return [sys.executable, '-m', 'dcsfn_jax.train',
          f'--config={_REPO / "configs" / "demo.py"}:smoke',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          f'--config.total_steps={_TOTAL_STEPS}',
          '--config.checkpoint_every_steps=3',
          f'--config.eval_every_steps={_TOTAL_STEPS}',
          '--config.log_every_steps=1', '--config.eval_max_images=1',
          '--config.ema_decay=0.9', '--config.grad_accum_steps=2',
          '--config.batch_size=8']


def _environment():
  # Unoptimised XLA compiles the tiny model faster; every run uses the same
  # setting, so results stay comparable bit for bit.
  return {**os.environ, 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true'}


def _run(workdir, data_dir):
  result = subprocess.run(_command(workdir, data_dir), capture_output=True,
                          text=True, timeout=_TIMEOUT_S, check=False,
                          env=_environment())
  assert result.returncode == 0, result.stderr[-4000:]
  return result.stderr


def _steps(workdir):
  folder = pathlib.Path(workdir) / checkpointing.CHECKPOINTS_SUBDIR
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _final_params(workdir, weights='raw'):
  params, _ = checkpointing.load_pretrained(
      pathlib.Path(workdir) / checkpointing.CHECKPOINTS_SUBDIR
      / str(_TOTAL_STEPS), weights=weights)
  return params


@pytest.mark.slow
def test_sigkill_and_restart_matches_an_uninterrupted_run(
    synthetic_data_dir, tmp_path):
  interrupted = tmp_path / 'interrupted'
  process = subprocess.Popen(_command(interrupted, synthetic_data_dir),
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=_environment())
  try:
    deadline = time.monotonic() + _TIMEOUT_S
    while not _steps(interrupted) and process.poll() is None:
      assert time.monotonic() < deadline, 'no checkpoint appeared in time'
      time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
  killed_at = _steps(interrupted)
  assert process.returncode == -signal.SIGKILL, (
      f'the trainer finished (exit {process.returncode}) before the kill; '
      'make the run longer')
  assert killed_at and killed_at[-1] < _TOTAL_STEPS

  log = _run(interrupted, synthetic_data_dir)
  assert f'step {killed_at[-1]}' in log.split('Resuming from', 1)[-1][:400]
  straight = tmp_path / 'straight'
  _run(straight, synthetic_data_dir)

  for weights in checkpointing.WEIGHTS:
    resumed = _final_params(interrupted, weights)
    reference = _final_params(straight, weights)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(resumed)[0],
                            jax.tree.leaves(reference)):
      np.testing.assert_array_equal(
          a, b, err_msg=f'{weights} {jax.tree_util.keystr(path)} differs '
          f'after resuming from step {killed_at[-1]}')
  # The average is a different set of weights, or the loop compared nothing.
  assert any(np.any(a != b) for a, b in zip(
      jax.tree.leaves(_final_params(straight, 'ema')),
      jax.tree.leaves(_final_params(straight, 'raw'))))
  # Every step after the last checkpoint ran again, and none twice since.
  logged = [json.loads(line)['step'] for line in
            (interrupted / 'metrics.jsonl').read_text().splitlines()
            if 'train/loss' in line]
  assert logged[-(_TOTAL_STEPS - killed_at[-1]):] == list(
      range(killed_at[-1] + 1, _TOTAL_STEPS + 1))
