"""benchmarks/device_check.py on a CPU-only machine: it says there is no
accelerator, runs its smoke version of every phase and exits 0, writing the
JSON report and leaving RESULTS.md alone."""
import json
import os
import re
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
  # The aot machinery's estimate beside the measured step (none on a CPU:
  # no published peak figures).
  estimate = phases['estimate_float32']
  assert estimate['ok'] and estimate['flops'] > 0, estimate
  assert estimate['measured_s'] == train['median_s']
  assert re.search(r'\[device_check\] train step, tiny model 2x16\^2, '
                   r'float32: AOT roofline estimate: none \(no published peak '
                   r"figures for 'cpu'\), [\d.]+ GFLOP; measured [\d.]+ ms",
                   completed.stdout), completed.stdout


def _run_check(tmp_path, env_changes, *flags):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  env.update(env_changes)
  env = {k: v for k, v in env.items() if v is not None}
  return subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'device_check.py'),
       f'--json_out={tmp_path / "device_check.json"}',
       f'--results_md={tmp_path / "RESULTS.md"}',
       f'--workdir={tmp_path / "work"}', *flags],
      capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def test_device_check_without_pytest_says_what_to_install(tmp_path):
  # A module named pytest that fails to import hides the installed one.
  hidden = tmp_path / 'hide_pytest'
  hidden.mkdir()
  (hidden / 'pytest.py').write_text(
      "raise ModuleNotFoundError(\"No module named 'pytest'\", "
      "name='pytest')\n")
  pythonpath = os.pathsep.join(
      filter(None, [str(hidden), os.environ.get('PYTHONPATH')]))
  completed = _run_check(tmp_path, {'PYTHONPATH': pythonpath})
  assert completed.returncode != 0
  lines = completed.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), completed.stderr
  assert "No module named 'pytest'" in lines[0]
  assert re.search(r"pip install -e '\.\[(cuda12,|tpu,)?test\]'", lines[0])
  assert '[device_check] info' not in completed.stdout, (
      'it ran phases before checking what they need')
  assert not (tmp_path / 'device_check.json').exists()


def _path_with_a_gpu(tmp_path):
  """PATH with an nvidia-smi that lists one GPU, whatever the machine has."""
  fake_bin = tmp_path / 'bin'
  fake_bin.mkdir()
  nvidia_smi = fake_bin / 'nvidia-smi'
  nvidia_smi.write_text('#!/bin/sh\necho "GPU 0: NVIDIA H200 (UUID: GPU-0)"\n')
  nvidia_smi.chmod(0o755)
  return f'{fake_bin}{os.pathsep}{os.environ["PATH"]}'


def test_device_check_on_a_gpu_jax_cannot_see_names_the_cuda_extra(tmp_path):
  path = _path_with_a_gpu(tmp_path)
  # No JAX_PLATFORMS (that would choose the CPU on purpose), and no GPU for
  # JAX to see even where there is a real one.
  completed = _run_check(tmp_path, {'PATH': path, 'JAX_PLATFORMS': None,
                                    'CUDA_VISIBLE_DEVICES': ''})
  assert completed.returncode != 0
  lines = completed.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), completed.stderr
  assert 'has a GPU, but JAX runs on the CPU' in lines[0]
  assert "pip install -e '.[cuda12,test]'" in lines[0]
  assert '[device_check] tests' not in completed.stdout


def test_device_check_runs_on_the_cpu_jax_platforms_chooses(tmp_path):
  path = _path_with_a_gpu(tmp_path)
  # A budget that the info phase spends: the later phases are skipped.
  completed = _run_check(tmp_path, {'PATH': path}, '--full', '--budget_s=16')
  assert 'error:' not in completed.stderr, completed.stderr
  assert '[device_check] info: ok' in completed.stdout, completed.stdout
