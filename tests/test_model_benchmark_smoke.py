"""benchmarks/speed.py --smoke runs end to end (tiny model, one run each)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A guard against a hang, not a speed test: the speed smoke runs 12 worker
# processes (80 s on 2 quiet cores) and timed out at 300 s under a loaded
# machine's fair share of the CPU.
HANG_GUARD_S = 1200


@pytest.mark.slow
def test_speed_benchmark_smoke_writes_json_for_every_case(tmp_path):
  pytest.importorskip('torch')
  json_out = tmp_path / 'speed.json'
  results_md = tmp_path / 'RESULTS.md'
  completed = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--smoke',
       '--repeats=1', '--warmup=0', '--jax_devices=1,2',
       '--cases=train,forward64,forward321,px64', f'--json_out={json_out}',
       f'--results_md={results_md}'],
      capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=ROOT)
  assert completed.returncode == 0, completed.stderr[-3000:]
  report = json.loads(json_out.read_text())
  assert set(report['cases']) == {'train', 'forward64', 'forward321', 'px64'}
  for case, result in report['cases'].items():
    workers = result['workers']
    assert set(workers) == {'jax', 'jax@2', 'torch'}, case
    for name, worker in workers.items():
      assert worker['median_s'] > 0, (case, name)
      assert worker['peak_rss_gb'] > 0, (case, name)
      assert worker['flops'] > 0, f'{case}: no XLA FLOP count'
    assert set(result['ratios']) == {'torch/jax', 'torch/jax@2', 'jax/jax@2'}
    assert all(ratio > 0 for ratio in result['ratios'].values())
  assert report['machine']['peak_gflops'] > 0
  assert not results_md.exists(), '--smoke must not append to RESULTS.md'
  assert '| px64 | jax@2 |' in completed.stdout


@pytest.mark.parametrize('flag', ['--cases=train,bogus', '--frameworks=tf',
                                  '--jax_devices=0'])
def test_speed_benchmark_rejects_bad_flags(flag, tmp_path):
  completed = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--smoke',
       flag, f'--json_out={tmp_path / "speed.json"}'],
      capture_output=True, text=True, timeout=120, cwd=ROOT)
  assert completed.returncode != 0
  assert flag.split('=')[1].split(',')[-1] in completed.stderr


def test_profile_step_smoke_summarises_the_trace(tmp_path):
  completed = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'profile_step.py'),
       '--smoke', '--steps=1', '--devices=2', f'--trace_dir={tmp_path}'],
      capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=ROOT)
  assert completed.returncode == 0, completed.stderr[-3000:]
  # One gradient all-reduce, no halo exchanges: the step is data parallel.
  assert '0 collective-permute' in completed.stdout
  assert completed.stdout.count('| tf_XLAEigen') >= 2  # a row per device
  assert '| convolution, weight gradient |' in completed.stdout
  assert '| convolution, forward or input gradient |' in completed.stdout
