r"""Device check: does this GPU/TPU machine run the project, and how fast?

  python benchmarks/device_check.py           # full on a GPU/TPU (~8 min);
                                              # on CPU it says so, runs the smoke
  python benchmarks/device_check.py --smoke   # the smoke anywhere (~1 min on CPU)
  python benchmarks/device_check.py --full    # the full check even on CPU (slow)

Phases, each in its own process under a time limit, the whole run within
--budget_s (later phases are skipped, and say so, when time runs out):
  info     the device(s) and the versions of jax, jaxlib, flax, optax, dm-pix,
           numpy and torch (and whether torch sees CUDA)
  tests    pytest -m accelerator: one train step and 20 bfloat16 steps on the
           default device, the on-device augmentation against float64
  speed    benchmarks/speed.py on the device, official preset: train step
           16x64^2, forward 16x64^2 and 1x321x481, compile time, peak device
           memory; float32 beside the PyTorch twin on CUDA (where torch sees a
           GPU), then bfloat16
  demo     python -m dcsfn_jax.train --config configs/demo.py
           --config.total_steps=300, and the loss of WORKDIR/metrics.jsonl,
           first against last logged value
  augment  benchmarks/input_pipeline.py: the on-device augmentation per batch
           as a fraction of the official train step
  estimate the train step of the speed phase compiled by dcsfn_jax.aot's
           machinery for these devices: its roofline ESTIMATE from the chip's
           published peaks, printed beside the measured step time, so the
           first run on a chip tells how good `python -m dcsfn_jax.aot`'s
           estimates are
The smoke runs the same phases, tiny (a few tests, speed.py --smoke, the
demo's smoke variant with the released augmentation on a tiny dataset), and
requires no falling loss. Writes one JSON file (--json_out); the full check
also appends a dated section to the archive of --results_md. Exits 0 when
every phase that ran passed.

Before any phase it checks what the phases need: pytest (the test extra), and
on a machine with an NVIDIA GPU or a TPU, a JAX that sees it (the cuda12 or
tpu extra; unless JAX_PLATFORMS chooses the platform). A missing one ends
the check with one line naming what to install.
"""
import datetime
import glob
import importlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent

_SMOKE = flags.DEFINE_bool('smoke', False, 'Run the smoke check even on an '
                           'accelerator.')
_FULL = flags.DEFINE_bool('full', False, 'Run the full check even on CPU.')
_BUDGET_S = flags.DEFINE_float('budget_s', 480.0, 'Seconds for all phases '
                               'together (full check).')
_JSON_OUT = flags.DEFINE_string('json_out', 'benchmarks/device_check.json',
                                'Where the JSON report goes.')
_RESULTS_MD = flags.DEFINE_string(
    'results_md', 'benchmarks/RESULTS.md', 'Markdown file the full check '
    'appends its dated section to.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Scratch folder (logs, demo '
                               'run); default: a temporary one, removed.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tfds data_dir of the demo (synthetic_rain is built '
    'there if missing); default: a fresh one in the scratch folder.')
_NOTE = flags.DEFINE_string('note', '', 'Free text for the RESULTS section.')

# Phase time limits, seconds: (full, smoke).
_LIMITS = {'info': (120, 60), 'tests': (150, 60), 'speed_float32': (240, 60),
           'demo': (200, 90), 'speed_bfloat16': (170, 60), 'augment': (120, 60),
           'estimate': (150, 90)}
_SPEED_CASES = ('train', 'forward64', 'forward321')
_CASE_NAMES = {'train': 'train step 16x64^2', 'forward64': 'forward 16x64^2',
               'forward321': 'forward 1x321x481'}
_DEMO_STEPS = 300

_INFO = r'''
import json, platform
import jax, jaxlib, flax, optax, dm_pix, numpy
devices = jax.devices()
info = {'backend': jax.default_backend(), 'device_count': len(devices),
        'device_kind': devices[0].device_kind, 'platform': devices[0].platform,
        'devices': [str(d) for d in devices],
        'memory_stats': bool(devices[0].memory_stats()),
        'python': platform.python_version(), 'jax': jax.__version__,
        'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
        'optax': optax.__version__, 'dm_pix': dm_pix.__version__,
        'numpy': numpy.__version__, 'torch': None, 'torch_cuda': False}
try:
  import torch
  info['torch'] = torch.__version__
  info['torch_cuda'] = torch.cuda.is_available()
  if info['torch_cuda']:
    info['torch_device'] = torch.cuda.get_device_name(0)
except ImportError:
  pass
print('DEVICE_INFO ' + json.dumps(info))
'''


# The speed phase's train step (speed.py: the official preset, or its tiny
# smoke model, on patches), compiled for the first device and estimated.
_ESTIMATE = r'''
import json, sys
import jax
from dcsfn_jax import models
from dcsfn_jax.compilation import report
from dcsfn_jax.training import config as config_lib
smoke, dtype = sys.argv[1] == 'smoke', sys.argv[2]
config = config_lib.base_config('official')
if smoke:
  config.model.update(channels=4, num_blocks=2, num_scales=2,
                      convs_per_scale=1)
config.model.dtype = dtype
config.augment = 'crop'
config.batch_size, config.patch_size = (2, 16) if smoke else (16, 64)
figures = report.step_estimate(config, jax.devices()[:1])
print('AOT_ESTIMATE ' + json.dumps(figures))
'''


# The pip extra that brings JAX's plugin for each accelerator this script
# recognises in the machine's hardware.
_EXTRAS = {'gpu': 'cuda12', 'tpu': 'tpu'}


def accelerator_hardware():
  """'gpu', 'tpu' or None: the accelerator the machine holds, JAX aside.

  A GPU is what `nvidia-smi -L` lists; a TPU is a PCI processing accelerator
  (class 0x12) from Google (vendor 0x1ae0), which Google's network cards,
  also vendor 0x1ae0, are not.
  """
  if shutil.which('nvidia-smi'):
    try:
      listed = subprocess.run(['nvidia-smi', '-L'], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
      listed = ''
    if any(line.startswith('GPU ') for line in listed.splitlines()):
      return 'gpu'
  for device in glob.glob('/sys/bus/pci/devices/*'):
    try:
      vendor = pathlib.Path(device, 'vendor').read_text().strip()
      device_class = pathlib.Path(device, 'class').read_text().strip()
    except OSError:
      continue
    if vendor == '0x1ae0' and device_class.startswith('0x12'):
      return 'tpu'
  return None


def install_hint(hardware):
  """The pip command that brings what the full check needs on `hardware`."""
  extras = ','.join(filter(None, [_EXTRAS.get(hardware), 'test']))
  return f"pip install -e '.[{extras}]'"


def missing_test_runner():
  """Why pytest (the tests phase's runner) cannot be imported, or None."""
  try:
    importlib.import_module('pytest')
  except ImportError as error:
    return str(error)
  return None


class Runner:
  """Runs phases as subprocesses within one time budget, logging each."""

  def __init__(self, workdir, budget_s, env):
    self.workdir = workdir
    self.deadline = time.monotonic() + budget_s
    self.env = env
    self.phases = {}

  def left(self):
    return self.deadline - time.monotonic()

  def run(self, name, command, limit, env=None, cwd=ROOT):
    """{'ok', 'seconds', 'returncode', 'timed_out', 'log'} of one command;
    None when the budget is spent."""
    limit = min(limit, self.left())
    if limit < 15:
      self.phases.setdefault(name, {'ok': None, 'skipped': 'time budget spent'})
      print(f'[device_check] {name}: skipped, the time budget is spent',
            flush=True)
      return None
    log = self.workdir / f'{name}.log'
    print(f'[device_check] {name}: {" ".join(map(str, command))[:160]} '
          f'(limit {limit:.0f} s)', flush=True)
    start = time.monotonic()
    with open(log, 'w') as out:
      # Its own process group, so that a timeout also ends the workers it
      # started (speed.py runs one process per framework and case).
      process = subprocess.Popen(
          [str(c) for c in command], stdout=out, stderr=subprocess.STDOUT,
          env={**self.env, **(env or {})}, cwd=cwd, start_new_session=True)
      try:
        returncode, timed_out = process.wait(timeout=limit), False
      except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        returncode, timed_out = None, True
    seconds = time.monotonic() - start
    result = {'ok': returncode == 0, 'seconds': round(seconds, 1),
              'returncode': returncode, 'timed_out': timed_out,
              'log': str(log)}
    if not result['ok']:
      result['tail'] = log.read_text(errors='replace')[-3000:]
    state = 'ok' if result['ok'] else (
        'TIMED OUT' if timed_out else f'FAILED (exit {returncode})')
    last_line = ''
    if not result['ok']:
      lines = result['tail'].strip().splitlines()
      last_line = f': {lines[-1].strip()}' if lines else ''
    print(f'[device_check] {name}: {state} in {seconds:.1f} s{last_line}',
          flush=True)
    return result


def _info(runner):
  result = runner.run('info', [sys.executable, '-c', _INFO],
                      _LIMITS['info'][0])
  info = {}
  if result and result['ok']:
    for line in pathlib.Path(result['log']).read_text().splitlines():
      if line.startswith('DEVICE_INFO '):
        info = json.loads(line[len('DEVICE_INFO '):])
  runner.phases['info'] = {**(result or {}), **info}
  return info


def _tests(runner, smoke):
  command = [sys.executable, '-m', 'pytest', '-m', 'accelerator', '-q',
             '-p', 'no:cacheprovider', '--no-header']
  if smoke:  # two quick marker tests prove the phase, CI runs the rest
    command += ['tests/test_data_augment.py', '-k',
                'flip_mirrors or quarter_turn']
  else:
    command += ['tests']
  result = runner.run('tests', command, _LIMITS['tests'][smoke])
  if result is None:
    return
  lines = pathlib.Path(result['log']).read_text(errors='replace').splitlines()
  summary = [line for line in lines if ' passed' in line or ' failed' in line
             or ' error' in line]
  result['summary'] = summary[-1].strip('= ') if summary else ''
  runner.phases['tests'] = result


def _speed(runner, smoke, dtype, frameworks):
  """speed.py, one case per process so that finished cases survive a
  timeout; {'cases': {case: {worker: figures}}}."""
  name = f'speed_{dtype}'
  phase = {'ok': True, 'seconds': 0.0, 'cases': {}, 'frameworks': frameworks}
  limit = _LIMITS[name][smoke]
  cases = ('train',) if smoke else _SPEED_CASES
  for case in cases:
    json_out = runner.workdir / f'{name}_{case}.json'
    command = [sys.executable, 'benchmarks/speed.py', f'--dtype={dtype}',
               f'--cases={case}', f'--frameworks={",".join(frameworks)}',
               '--jax_devices=1', f'--json_out={json_out}',
               f'--results_md={runner.workdir / "speed_RESULTS.md"}']
    command += (['--smoke', '--repeats=1', '--warmup=0'] if smoke else
                ['--repeats=5', '--warmup=2'])
    result = runner.run(f'{name}_{case}', command,
                        limit * (1.6 if case == 'train' else 0.7) / len(cases))
    if result is None:
      phase['skipped'] = f'from {case} on: time budget spent'
      break
    phase['seconds'] += result['seconds']
    if not result['ok']:
      phase['ok'] = False
      phase.setdefault('failed', {})[case] = result
      continue
    workers = json.loads(json_out.read_text())['cases'][case]['workers']
    phase['cases'][case] = {
        worker: {key: figures[key] for key in
                 ('median_s', 'compile_s', 'peak_device_gb', 'peak_rss_gb',
                  'device') if key in figures}
        for worker, figures in workers.items()}
  phase['seconds'] = round(phase['seconds'], 1)
  runner.phases[name] = phase


def _losses(metrics_file):
  """(step, train/loss) pairs of a metrics.jsonl, and its last eval."""
  losses, last_eval = [], {}
  for line in pathlib.Path(metrics_file).read_text().splitlines():
    record = json.loads(line)
    if 'train/loss' in record:
      losses.append((record['step'], record['train/loss']))
    if 'eval/psnr' in record:
      last_eval = {k: v for k, v in record.items() if k.startswith('eval/')}
  return losses, last_eval


def _demo(runner, smoke):
  workdir = runner.workdir / 'demo'
  data_dir = pathlib.Path(_DATA_DIR.value or runner.workdir / 'tfds')
  config = 'configs/demo.py:smoke' if smoke else 'configs/demo.py'
  # --config comes before its --config.* overrides.
  command = [sys.executable, '-m', 'dcsfn_jax.train', f'--config={config}',
             f'--workdir={workdir}', f'--config.data_dir={data_dir}']
  env = {}
  if smoke:
    prepared = runner.run('demo_data', [
        sys.executable, '-c',
        'import sys; from dcsfn_jax.data import prepare_synthetic; '
        'prepare_synthetic(sys.argv[1], max_size=72, num_train=8, '
        'num_test=2)', data_dir], _LIMITS['demo'][smoke] / 3)
    if not prepared or not prepared['ok']:
      runner.phases['demo'] = prepared or {'ok': None, 'skipped': 'budget'}
      return None
    command += ['--config.augment=released',
                '--config.total_steps=6', '--config.log_every_steps=1',
                '--config.eval_every_steps=6',
                '--config.checkpoint_every_steps=6',
                '--config.eval_max_images=1', '--config.prepare_data=False']
    env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
  else:
    command.append(f'--config.total_steps={_DEMO_STEPS}')
  result = runner.run('demo', command, _LIMITS['demo'][smoke], env=env)
  if result is None:
    return None
  result['steps'] = 6 if smoke else _DEMO_STEPS
  metrics_file = workdir / 'metrics.jsonl'
  if metrics_file.exists():
    losses, last_eval = _losses(metrics_file)
    result.update(losses=losses, eval=last_eval)
    if losses:
      result['loss_first'], result['loss_last'] = losses[0][1], losses[-1][1]
      result['loss_falling'] = losses[-1][1] < losses[0][1]
      if not smoke and not result['loss_falling']:
        result['ok'] = False
    elif result['ok']:
      result['ok'] = False
      result['tail'] = 'metrics.jsonl holds no train/loss'
  runner.phases['demo'] = result
  return data_dir if result['ok'] else None


def _augment(runner, smoke, data_dir):
  command = [sys.executable, 'benchmarks/input_pipeline.py', '--threads=1']
  if data_dir is not None:
    command.append(f'--data_dir={data_dir}')
  if smoke:
    command += ['--patch_size=16', '--batch_size=4', '--step_repeats=0',
                '--augment_repeats=3', '--num_batches=2', '--cache_mib=0']
  else:
    command.append('--cache_mib=1024')
  result = runner.run('augment', command, _LIMITS['augment'][smoke])
  if result is None:
    return
  text = pathlib.Path(result['log']).read_text(errors='replace')
  result['figures'] = [line.strip() for line in text.splitlines()
                       if line.startswith('  ') or line.startswith('on ')]
  runner.phases['augment'] = result


def _estimate(runner, smoke, dtype):
  """The roofline estimate of the speed phase's train step, printed beside
  its measured median."""
  name = f'estimate_{dtype}'
  result = runner.run(name, [sys.executable, '-c', _ESTIMATE,
                             'smoke' if smoke else 'full', dtype],
                      _LIMITS['estimate'][smoke])
  if result is None:
    return
  for line in pathlib.Path(result['log']).read_text().splitlines():
    if line.startswith('AOT_ESTIMATE '):
      result.update(json.loads(line[len('AOT_ESTIMATE '):]))
  measured = (runner.phases.get(f'speed_{dtype}', {}).get('cases', {})
              .get('train', {}).get('jax', {}).get('median_s'))
  result['measured_s'] = measured
  runner.phases[name] = result
  print(f'[device_check] {estimate_line(result, smoke, dtype)}', flush=True)


def estimate_line(estimate, smoke, dtype):
  """'train step ..., dtype: AOT roofline estimate ... beside measured ...'."""
  label = 'train step, tiny model 2x16^2' if smoke else _CASE_NAMES['train']
  if estimate.get('estimate_s') is not None:
    guess = f'AOT roofline estimate {1e3 * estimate["estimate_s"]:.2f} ms'
  else:
    guess = ('AOT roofline estimate: none '
             f'({estimate.get("note") or _state(estimate)})')
  flops = estimate.get('flops')
  if flops:
    guess += f', {flops / 1e9:.2f} GFLOP'
  measured = estimate.get('measured_s')
  return (f'{label}, {dtype}: {guess}; measured '
          + (f'{1e3 * measured:.1f} ms' if measured else 'not run'))


def _fmt_worker(figures):
  parts = [f'{1e3 * figures["median_s"]:.1f} ms']
  if 'compile_s' in figures and figures.get('device') is None:
    parts.append(f'compile {figures["compile_s"]:.1f} s')
  if 'peak_device_gb' in figures:
    parts.append(f'peak {figures["peak_device_gb"]:.2f} GB')
  return ', '.join(parts)


def markdown(report):
  """The dated RESULTS.md section of a check (appended for the full one)."""
  smoke = report['mode'] == 'smoke'
  info = report['phases'].get('info', {})
  device = (f'{info.get("device_count", "?")} x {info.get("device_kind", "?")} '
            f'({info.get("backend", "?")})')
  lines = [f'\n## {report["date"]} — device check: {device}, jax '
           f'{info.get("jax", "?")}\n',
           f'`python benchmarks/device_check.py` ({report["mode"]}, '
           f'{report["total_s"]:.0f} s); torch {info.get("torch") or "-"} '
           f'(CUDA: {"yes" if info.get("torch_cuda") else "no"}); dm-pix '
           f'{info.get("dm_pix", "?")}. {report["note"]}\n',
           '| check | result |', '|---|---|']
  tests = report['phases'].get('tests', {})
  lines.append(f'| accelerator tests | {tests.get("summary") or _state(tests)} '
               '|')
  for dtype in ('float32', 'bfloat16'):
    speed = report['phases'].get(f'speed_{dtype}', {})
    for case in _SPEED_CASES:
      workers = speed.get('cases', {}).get(case)
      if not workers:
        continue
      cells = [f'JAX {_fmt_worker(workers["jax"])}'] if 'jax' in workers else []
      if 'torch' in workers:
        cells.append(f'PyTorch twin on {workers["torch"].get("device", "?")} '
                     f'{_fmt_worker(workers["torch"])}')
      label = 'train step, tiny model 2x16^2' if smoke else _CASE_NAMES[case]
      lines.append(f'| {label}, {dtype} | {"; ".join(cells)} |')
    if speed and not speed.get('ok', True):
      lines.append(f'| speed, {dtype} | failed: {sorted(speed.get("failed", {}))} |')
  for dtype in ('float32', 'bfloat16'):
    estimate = report['phases'].get(f'estimate_{dtype}')
    if estimate:
      lines.append(f'| AOT estimate beside the measurement | '
                   f'{estimate_line(estimate, smoke, dtype)} |')
  demo = report['phases'].get('demo', {})
  demo_label = (f'demo{":smoke" if smoke else ""}, '
                f'{demo.get("steps", _DEMO_STEPS)} steps')
  if 'loss_first' in demo:
    evaluation = demo.get('eval', {})
    psnr = (f'; eval {evaluation["eval/psnr"]:.2f} dB against '
            f'{evaluation["eval/input_psnr"]:.2f} dB for the inputs'
            if 'eval/psnr' in evaluation else '')
    lines.append(f'| {demo_label} | loss {demo["loss_first"]:.4f} '
                 f'-> {demo["loss_last"]:.4f} '
                 f'({"falling" if demo["loss_falling"] else "NOT falling"})'
                 f'{psnr}; {demo["seconds"]:.0f} s |')
  else:
    lines.append(f'| {demo_label} | {_state(demo)} |')
  augment_phase = report['phases'].get('augment', {})
  figures = [f for f in augment_phase.get('figures', []) if 'augmentation' in f]
  lines.append(f'| augmentation on the device | '
               f'{"; ".join(figures) or _state(augment_phase)} |')
  return '\n'.join(lines) + '\n'


def _state(phase):
  if not phase:
    return 'not run'
  if phase.get('skipped'):
    return f'skipped ({phase["skipped"]})'
  return 'ok' if phase.get('ok') else 'FAILED'


def main(argv):
  del argv
  start = time.monotonic()
  hardware = accelerator_hardware()
  missing = missing_test_runner()
  if missing:
    sys.exit(f'error: the tests phase runs pytest, which this Python cannot '
             f'import ({missing}); install the test extra: '
             f'{install_hint(hardware)}')
  own_workdir = _WORKDIR.value is None
  workdir = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(
      prefix='device_check_'))
  workdir.mkdir(parents=True, exist_ok=True)
  # Several processes may hold the accelerator at once (speed.py's JAX and
  # PyTorch workers): none may take most of its memory up front.
  env = {**os.environ, 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
         'PYTHONUNBUFFERED': '1'}
  runner = Runner(workdir, _BUDGET_S.value, env)
  info = _info(runner)
  accelerator = info.get('backend') not in (None, 'cpu')
  # JAX_PLATFORMS set by the user chooses the platform on purpose.
  if (hardware and info.get('backend') == 'cpu'
      and not os.environ.get('JAX_PLATFORMS')):
    unseen = (f'this machine has a {hardware.upper()}, but JAX runs on the '
              f'CPU; install the {_EXTRAS[hardware]} extra: '
              f'{install_hint(hardware)}')
    if not _SMOKE.value:
      if own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
      sys.exit(f'error: {unseen}')
    print(f'[device_check] {unseen}', flush=True)
  smoke = _SMOKE.value or not (accelerator or _FULL.value)
  if not accelerator:
    print('[device_check] No GPU or TPU: JAX runs on '
          f'{info.get("backend", "an unknown backend")}. '
          + ('Running the smoke check; on a GPU/TPU machine the full check '
             'runs by itself.' if smoke else 'Running the full check on it '
             '(--full).'), flush=True)
  else:
    print(f'[device_check] {info["device_count"]} x {info["device_kind"]} '
          f'({info["backend"]}); jax {info["jax"]}, jaxlib {info["jaxlib"]}, '
          f'flax {info["flax"]}, dm-pix {info["dm_pix"]}, torch '
          f'{info["torch"]} (CUDA: {info["torch_cuda"]})', flush=True)
  if smoke:
    runner.deadline = max(runner.deadline, time.monotonic() + 120)
  _tests(runner, smoke)
  with_torch = bool(info.get('torch_cuda')) and not smoke
  _speed(runner, smoke, 'float32', ['jax', 'torch'] if with_torch else ['jax'])
  _estimate(runner, smoke, 'float32')
  data_dir = _demo(runner, smoke)
  if not smoke:
    _speed(runner, smoke, 'bfloat16', ['jax'])
    _estimate(runner, smoke, 'bfloat16')
  _augment(runner, smoke, data_dir)

  report = {'date': datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M UTC'), 'mode': 'smoke' if smoke else 'full',
            'accelerator': accelerator, 'note': _NOTE.value,
            'total_s': round(time.monotonic() - start, 1),
            'phases': runner.phases}
  failed = sorted(name for name, phase in runner.phases.items()
                  if phase.get('ok') is False)
  report['failed'] = failed
  json_out = pathlib.Path(_JSON_OUT.value)
  json_out.parent.mkdir(parents=True, exist_ok=True)
  json_out.write_text(json.dumps(report, indent=1))
  section = markdown(report)
  if not smoke:
    with open(_RESULTS_MD.value, 'a') as f:
      f.write(section)
  print(section)
  print(f'[device_check] {report["mode"]} check done in '
        f'{report["total_s"]:.0f} s; report {json_out}'
        + (f'; section appended to {_RESULTS_MD.value}' if not smoke else '')
        + (f'; FAILED: {", ".join(failed)}' if failed else '; all passed'),
        flush=True)
  if own_workdir and not failed:
    shutil.rmtree(workdir, ignore_errors=True)
  elif failed:
    print(f'[device_check] logs kept in {workdir}', flush=True)
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  app.run(main)
