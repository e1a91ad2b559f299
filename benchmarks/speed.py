"""DCSFN speed: JAX/Flax against the PyTorch twin on the same machine.

  python benchmarks/speed.py                          # official, float32, 5 runs
  python benchmarks/speed.py --jax_devices=1,2        # + JAX on 2 host devices
  python benchmarks/speed.py --cases=scaling --frameworks=jax   # 64^2..1024^2
  python benchmarks/speed.py --smoke                  # tiny model, one run (CI)

Cases: the training step (the trainer's own: forward, backward, Adam, -SSIM)
on 16x64x64, the forward pass on 16x64x64 and on 1x321x481, and pxN, the
forward pass on one NxN image. Every (worker, case) runs in its own process,
so peak RSS is per case; a worker is PyTorch (the twin, all cores) or JAX on
one of the --jax_devices counts of XLA host devices. The workers of a case are
timed alternately, one run each in turn, and the medians of `--repeats` runs
after `--warmup` runs are reported with seconds per megapixel, JAX's compile
time, peak accelerator memory (JAX's `device.memory_stats()` on GPU/TPU,
torch's CUDA allocator; the twin runs on CUDA when torch sees a GPU), XLA's
FLOP count, the achieved GFLOP/s as % of the machine's FP32 peak
(estimated from lscpu and /proc/cpuinfo), and the time ratios against PyTorch
and against JAX on one device. Writes JSON (--json_out) and, except with
--smoke, appends a dated table to the archive of benchmarks/RESULTS.md (its
current figures, at the top, are updated by hand).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny model, small inputs, one run.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per case (median).')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed runs after compiling.')
_CASES = flags.DEFINE_list(
    'cases', ['train', 'forward64', 'forward321'],
    'Cases to run: train, forward64, forward321, or pxN (forward of one NxN '
    'image; `scaling` expands to px64,px128,px256,px512,px1024).')
_FRAMEWORKS = flags.DEFINE_list('frameworks', ['jax', 'torch'],
                                'Frameworks to compare: jax, torch.')
_PRESET = flags.DEFINE_string('preset', 'official', 'Model preset.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'JAX compute dtype (PyTorch always float32).')
_JAX_DEVICES = flags.DEFINE_list(
    'jax_devices', ['1'], 'XLA host device counts on CPU, each timed as its '
    'own JAX worker (e.g. 1,2 for the scaling); batches are split over them. '
    'On a GPU/TPU machine use 1: the accelerator is the device.')
_REMAT = flags.DEFINE_enum(
    'remat', 'auto', ['auto', 'true', 'false'],
    "config.model.remat for the train case: 'auto' resolves as the trainer "
    'does (training.memory, against the default remat_budget_gb).')
_JSON_OUT = flags.DEFINE_string('json_out', 'benchmarks/speed.json',
                                'Where to write the JSON results.')
_RESULTS_MD = flags.DEFINE_string('results_md', 'benchmarks/RESULTS.md',
                                  'Markdown file the dated table is appended to.')
_NOTE = flags.DEFINE_string('note', '', 'Free text added to the RESULTS row.')
_WORKER = flags.DEFINE_string('worker', None, 'Internal: framework:case.')

BATCH, PATCH, HEIGHT, WIDTH = 16, 64, 321, 481


SCALING_SIDES = (64, 128, 256, 512, 1024)


def _shape(case: str, smoke: bool) -> tuple[int, int, int]:
  """(batch, height, width) of a case."""
  if case.startswith('px'):
    side = int(case[2:])
    return (1, side // 8, side // 8) if smoke else (1, side, side)
  if smoke:
    return {'train': (2, 16, 16), 'forward64': (2, 16, 16),
            'forward321': (1, 21, 27)}[case]
  return {'train': (BATCH, PATCH, PATCH), 'forward64': (BATCH, PATCH, PATCH),
          'forward321': (1, HEIGHT, WIDTH)}[case]


def _expand_cases(cases: list[str]) -> list[str]:
  expanded = []
  for case in cases:
    if case == 'scaling':
      expanded += [f'px{side}' for side in SCALING_SIDES]
    elif (case in ('train', 'forward64', 'forward321')
          or re.fullmatch(r'px[1-9]\d*', case)):
      expanded.append(case)
    else:
      raise app.UsageError(f'Unknown case {case!r}; see --help.')
  return expanded


def _model_config(preset: str, smoke: bool, dtype: str):
  from dcsfn_jax import models  # pylint: disable=g-import-not-at-top
  config = models.preset(preset)
  if smoke:
    config.update(channels=4, num_blocks=2, num_scales=2, convs_per_scale=1)
  config.dtype = dtype
  return config


def machine() -> dict:
  """CPU description and an FP32 peak estimate: cores x GHz x FLOP/cycle."""
  lscpu = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
  field = lambda name: (re.search(rf'^{name}:\s*(.+)$', lscpu, re.M) or
                        [None, '?'])[1].strip()
  with open('/proc/cpuinfo') as f:
    mhz = [float(m) for m in re.findall(r'cpu MHz\s*:\s*([\d.]+)', f.read())]
  cores = os.cpu_count() or 1
  flags_line = field('Flags')
  # Two 256-bit FMA pipes (AVX2/AVX-512 on Zen 4, Skylake+) give 32 FP32
  # FLOP/cycle; without FMA, 16.
  per_cycle = 32 if ' fma' in f' {flags_line}' else 16
  ghz = (max(mhz) if mhz else 2.0) / 1000
  return {'cpu': field('Model name'), 'cores': cores, 'ghz': round(ghz, 3),
          'flop_per_cycle': per_cycle,
          'peak_gflops': round(cores * ghz * per_cycle, 1),
          'python': platform.python_version()}


# ----------------------------------------------------------------- workers --

def _peak_rss_gb() -> float:
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _jax_case(case, config, shape, devices):
  """Returns (run_once, info, count_flops) for JAX; run_once blocks until
  done."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import models, parallel, platforms  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.inference import runner as runner_lib  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import memory  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training.config import base_config as base_train_config  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(jax.devices()[:devices])
  model = platforms.model_for(config, mesh.devices.flat)
  rng = np.random.default_rng(0)
  rainy = rng.random(shape + (3,), dtype=np.float32)
  clean = rng.random(shape + (3,), dtype=np.float32)
  params = models.runtime_layout(
      models.init_params(model, jax.random.key(0), shape + (3,)), config)
  info = {}
  if case == 'train':  # The trainer's own step, state and layout.
    train_config = base_train_config()
    train_config.model = models.replaced(
        config, remat={'auto': 'auto', 'true': True, 'false': False}[
            _REMAT.value])
    train_config.batch_size, train_config.patch_size = shape[0], shape[1]
    model_config, info['remat'] = memory.resolve_remat(
        train_config, mesh.devices.flat)
    model = models.build_model(model_config)
    optimizer = optax.adam(5e-4)
    step_fn = state_lib.make_train_step(model, optimizer, lambda _: 5e-4,
                                        train_config, mesh)
    state = [parallel.replicate(state_lib.create_train_state(
        model, optimizer, shape[1], jax.random.key(0)), mesh)]
    batch = parallel.shard_batch({'rainy': rainy, 'clean': clean}, mesh)
    start = time.perf_counter()
    compiled = step_fn.lower(state[0], batch).compile()
    compile_s = time.perf_counter() - start

    def run_once():
      state[0], metrics = compiled(state[0], batch)
      metrics['loss'].block_until_ready()
  else:  # What derain and evaluate run: host images in, host images out.
    # The worker's process has exactly `devices` XLA devices.
    runner = runner_lib.Runner(runner_lib.forward_fn(config),
                              batch_size=shape[0])
    placed = runner.place(params)
    run_once = lambda: runner(placed, {'rainy': rainy})
    start = time.perf_counter()
    run_once()
    first = time.perf_counter() - start
    start = time.perf_counter()
    run_once()
    compile_s = first - (time.perf_counter() - start)

  count_flops = lambda: _unrolled_flops(case, config, params, rainy, clean)
  return run_once, {'compile_s': compile_s, **info}, count_flops


def _unrolled_flops(case, config, params, rainy, clean) -> float:
  """XLA's FLOP count of the same computation without the block scan.

  XLA counts a loop body once, not once per trip, so the count comes from the
  unrolled graph (lowered, not compiled); it excludes the scan's ~10% extra
  dense-fusion work and the rematerialised forward.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import models, platforms  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import losses  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.scan_blocks = False
  model = platforms.model_for(config, jax.devices()[:1])  # jit's default
  params = models.unstack_blocks(params)
  if case == 'train':
    fn = jax.grad(lambda p: losses.derain_loss(
        model.apply({'params': p}, rainy), clean)[0])
    lowered = jax.jit(fn).lower(params)
  else:
    lowered = jax.jit(model.apply).lower({'params': params}, rainy)
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('flops', 0.0))


def _torch_ssim(a, b):
  import torch  # pylint: disable=g-import-not-at-top
  coords = torch.arange(11, dtype=torch.float32) - 5
  g = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
  g = g / g.sum()
  window = torch.outer(g, g)[None, None].repeat(3, 1, 1, 1)
  blur = lambda x: torch.nn.functional.conv2d(x, window, padding=5, groups=3)
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  return ((2 * mu_a * mu_b + c1) * (2 * cov + c2) /
          ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()


def _torch_case(case, config, shape):
  """On CUDA when torch sees a GPU, else on every CPU core."""
  import torch  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.pytorch.torch_twin import build_torch_model  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  config = config.copy_and_resolve_references()
  config.dtype = 'float32'
  net = build_torch_model(config).to(device)
  rainy = torch.rand(shape[0], 3, *shape[1:], device=device)
  clean = torch.rand(shape[0], 3, *shape[1:], device=device)
  synchronize = torch.cuda.synchronize if device == 'cuda' else lambda: None
  if case == 'train':
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)

    def run_once():
      optimizer.zero_grad()
      loss = -_torch_ssim(net(rainy), clean)
      loss.backward()
      optimizer.step()
      synchronize()
  else:
    net.eval()

    def run_once():
      with torch.no_grad():
        net(rainy)
      synchronize()
  return run_once, {'compile_s': 0.0, 'device': device}, lambda: 0.0


def _worker(spec: str) -> None:
  """Line protocol on stdin/stdout: 'run' -> seconds; 'quit' -> summary."""
  framework, case = spec.split(':')
  config = _model_config(_PRESET.value, _SMOKE.value, _DTYPE.value)
  shape = _shape(case, _SMOKE.value)
  if framework.startswith('jax'):
    run_once, info, count_flops = _jax_case(
        'train' if case == 'train' else 'forward', config, shape,
        _devices_of(framework))
  else:
    run_once, info, count_flops = _torch_case(case, config, shape)
  for _ in range(_WARMUP.value):
    run_once()
  print(json.dumps({'ready': True, **info}), flush=True)
  for line in sys.stdin:
    if line.strip() == 'run':
      start = time.perf_counter()
      run_once()
      print(json.dumps({'seconds': time.perf_counter() - start}), flush=True)
    else:
      break
  peak_rss_gb = _peak_rss_gb()  # Before lowering the unrolled graph.
  peak = _peak_device_gb(framework)
  print(json.dumps({'peak_rss_gb': peak_rss_gb, 'flops': count_flops(),
                    **({'peak_device_gb': peak} if peak is not None else {})}),
        flush=True)


def _peak_device_gb(framework: str) -> float | None:
  """Peak memory in use on the accelerator (GB), where it reports one: JAX's
  `device.memory_stats()` (GPU, TPU; None on CPU), torch's CUDA allocator."""
  if framework.startswith('jax'):
    import jax  # pylint: disable=g-import-not-at-top
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get('peak_bytes_in_use')
    return None if peak is None else peak / 2**30
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    return torch.cuda.max_memory_allocated() / 2**30
  return None


# ------------------------------------------------------------------ parent --

def _devices_of(worker_name: str) -> int:
  """'jax' -> 1 device, 'jax@2' -> 2."""
  return int(worker_name.partition('@')[2] or 1)


def _worker_names() -> list[str]:
  names = []
  for framework in _FRAMEWORKS.value:
    if framework == 'jax':
      names += ['jax' if int(n) == 1 else f'jax@{int(n)}'
                for n in _JAX_DEVICES.value]
    else:
      names.append(framework)
  return names


def _start_worker(name: str, case: str) -> subprocess.Popen:
  env = dict(os.environ)
  if name.startswith('jax'):
    # Always set, so that a worker never inherits another device count.
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_'
                        f'device_count={_devices_of(name)}').strip()
  args = [sys.executable, os.path.abspath(__file__),
          f'--worker={name}:{case}', f'--preset={_PRESET.value}',
          f'--dtype={_DTYPE.value}', f'--warmup={_WARMUP.value}',
          f'--remat={_REMAT.value}',
          '--smoke' if _SMOKE.value else '--nosmoke']
  return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, env=env)


def _read(worker: subprocess.Popen, what: str) -> dict:
  line = worker.stdout.readline()
  if not line:
    raise RuntimeError(f'benchmark worker {worker.args[2]} died while {what} '
                       f'(exit code {worker.wait()}); see its stderr above.')
  return json.loads(line)


def _run_case(case: str, peak_gflops: float) -> dict:
  workers, results = {}, {}
  for fw in _worker_names():  # One at a time, so compiles are not contended.
    workers[fw] = _start_worker(fw, case)
    results[fw] = _read(workers[fw], 'compiling/warming up')
  times = {fw: [] for fw in workers}
  for _ in range(_REPEATS.value):
    for fw, worker in workers.items():  # Alternate, one run each in turn.
      worker.stdin.write('run\n')
      worker.stdin.flush()
      times[fw].append(_read(worker, 'running')['seconds'])
  for fw, worker in workers.items():
    worker.stdin.write('quit\n')
    worker.stdin.flush()
    results[fw].update(_read(worker, 'finishing'))
    worker.wait()
  flops = max(result.get('flops', 0.0) for result in results.values())
  pixels = math.prod(_shape(case, _SMOKE.value))
  for fw, result in results.items():
    result.pop('ready', None)
    result['seconds_per_megapixel'] = (statistics.median(times[fw])
                                       / (pixels / 1e6))
    result['median_s'] = statistics.median(times[fw])
    result['times_s'] = times[fw]
    result['flops'] = flops  # XLA's count (unrolled model, same batch).
    result['gflops_per_s'] = flops / 1e9 / result['median_s']
    result['percent_of_peak'] = 100 * result['gflops_per_s'] / peak_gflops
  ratios = {}
  for fw in results:
    if fw.startswith('jax') and 'torch' in results:
      ratios[f'torch/{fw}'] = (results['torch']['median_s'] /
                               results[fw]['median_s'])
    if fw.startswith('jax@') and 'jax' in results:
      ratios[f'jax/{fw}'] = results['jax']['median_s'] / results[fw]['median_s']
  return {'workers': results, 'ratios': ratios}


def _markdown(report: dict) -> str:
  m = report['machine']
  lines = [
      f"\n## {report['date']} — {report['preset']}, {report['dtype']}, "
      f"JAX on {', '.join(report['jax_devices'])} XLA host device(s), median "
      f"of {report['repeats']}",
      f"\n{m['cpu']}, {m['cores']} cores @ {m['ghz']} GHz, est. FP32 peak "
      f"{m['peak_gflops']} GFLOP/s; jax {report['versions']['jax']}, torch "
      f"{report['versions'].get('torch', '-')}; load average "
      f"{report['load_average'][0]:.1f} before, "
      f"{report['load_average_after'][0]:.1f} after. {report['note']}\n",
      '| case | worker | s | s/Mpx | compile s | peak RSS GB | peak device GB '
      '| XLA GFLOP | % peak | PyTorch/this | JAX 1 device/this |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  fmt = lambda d, k, p=2: f'{d[k]:.{p}f}' if k in d else '-'
  for case, r in report['cases'].items():
    for name, w in r['workers'].items():
      ratios = r['ratios']
      lines.append(
          f"| {case} | {name} | {fmt(w, 'median_s')} | "
          f"{fmt(w, 'seconds_per_megapixel')} | "
          f"{fmt(w, 'compile_s', 1) if name != 'torch' else '-'} | "
          f"{fmt(w, 'peak_rss_gb')} | {fmt(w, 'peak_device_gb')} | "
          f"{w.get('flops', 0) / 1e9:.0f} | "
          f"{fmt(w, 'percent_of_peak', 0)} | "
          f"{fmt(ratios, f'torch/{name}')} | {fmt(ratios, f'jax/{name}')} |")
  lines += [f"\n{case}, {name}: {w['remat']}."
            for case, r in report['cases'].items()
            for name, w in r['workers'].items() if 'remat' in w]
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  if _WORKER.value:
    _worker(_WORKER.value)
    return
  cases = _expand_cases(_CASES.value)
  if set(_FRAMEWORKS.value) - {'jax', 'torch'}:
    raise app.UsageError(f'Unknown --frameworks {_FRAMEWORKS.value}; choose '
                         'from jax, torch.')
  if not all(n.isdigit() and int(n) >= 1 for n in _JAX_DEVICES.value):
    raise app.UsageError(f'--jax_devices={",".join(_JAX_DEVICES.value)} must '
                         'be positive integers, e.g. 1,2.')
  import jax  # pylint: disable=g-import-not-at-top
  versions = {'jax': jax.__version__}
  if 'torch' in _FRAMEWORKS.value:
    import torch  # pylint: disable=g-import-not-at-top
    versions['torch'] = torch.__version__
  info = machine()
  report = {'date': datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M UTC'), 'preset': 'tiny' if _SMOKE.value else
            _PRESET.value, 'dtype': _DTYPE.value,
            'jax_devices': _JAX_DEVICES.value, 'repeats': _REPEATS.value,
            'machine': info, 'versions': versions, 'note': _NOTE.value,
            'load_average': os.getloadavg(), 'cases': {}}
  for case in cases:
    print(f'[speed] {case} ...', file=sys.stderr, flush=True)
    report['cases'][case] = _run_case(case, info['peak_gflops'])
    print(json.dumps({case: report['cases'][case]}, indent=1), flush=True)
  report['load_average_after'] = os.getloadavg()
  os.makedirs(os.path.dirname(os.path.abspath(_JSON_OUT.value)), exist_ok=True)
  with open(_JSON_OUT.value, 'w') as f:
    json.dump(report, f, indent=1)
  if not _SMOKE.value:
    with open(_RESULTS_MD.value, 'a') as f:
      f.write(_markdown(report))
  print(_markdown(report))


if __name__ == '__main__':
  app.run(main)
