"""benchmarks/device_check.py on a CPU-only machine: it says there is no
accelerator, runs its smoke version of every phase and exits 0, writing the
JSON report and leaving RESULTS.md alone."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_device_check_smoke_on_cpu(tmp_path):
  json_out = tmp_path / 'device_check.json'
  results_md = tmp_path / 'RESULTS.md'
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  completed = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'device_check.py'),
       f'--json_out={json_out}', f'--results_md={results_md}',
       f'--workdir={tmp_path / "work"}'],
      capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
  assert completed.returncode == 0, (completed.stdout[-3000:]
                                     + completed.stderr[-3000:])
  assert 'No GPU or TPU' in completed.stdout
  report = json.loads(json_out.read_text())
  assert report['mode'] == 'smoke' and not report['accelerator']
  assert report['failed'] == []
  phases = report['phases']
  assert phases['info']['backend'] == 'cpu' and phases['info']['jax']
  assert 'passed' in phases['tests']['summary']
  train = phases['speed_float32']['cases']['train']['jax']
  assert train['median_s'] > 0 and train['compile_s'] > 0
  demo = phases['demo']
  assert demo['ok'] and len(demo['losses']) == demo['steps']
  assert 'eval/psnr' in demo['eval']
  assert any('augmentation' in line for line in phases['augment']['figures'])
  assert not results_md.exists(), 'the smoke must not append to RESULTS.md'
  assert '| accelerator tests |' in completed.stdout
