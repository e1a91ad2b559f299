"""benchmarks/speed.py --smoke runs end to end (tiny model, one run each)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_benchmark_smoke_writes_json_for_every_case(tmp_path):
  pytest.importorskip('torch')
  json_out = tmp_path / 'speed.json'
  results_md = tmp_path / 'RESULTS.md'
  completed = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'speed.py'), '--smoke',
       '--repeats=1', '--warmup=0', f'--json_out={json_out}',
       f'--results_md={results_md}'],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert completed.returncode == 0, completed.stderr[-3000:]
  report = json.loads(json_out.read_text())
  assert set(report['cases']) == {'train', 'forward64', 'forward321'}
  for case, result in report['cases'].items():
    for framework in ('jax', 'torch'):
      assert result[framework]['median_s'] > 0, (case, framework)
      assert result[framework]['peak_rss_gb'] > 0, (case, framework)
    assert result['jax']['flops'] > 0, f'{case}: no XLA FLOP count'
    assert result['torch_over_jax'] > 0
  assert report['machine']['peak_gflops'] > 0
  assert not results_md.exists(), '--smoke must not append to RESULTS.md'
