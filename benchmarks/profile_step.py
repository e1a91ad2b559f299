"""Where the training step's time goes: a jax.profiler trace, summarised.

  python benchmarks/profile_step.py                    # official, 16x64x64
  python benchmarks/profile_step.py --devices=2 --steps=3
  python benchmarks/profile_step.py --smoke            # tiny model (CI-sized)

Runs the trainer's own step (training.state.make_train_step) under
`jax.profiler.trace`, keeps the trace (TensorBoard's profile plugin or
Perfetto open it: --trace_dir) and prints the XLA operations that took the
most time, grouped by kind (weight-gradient convolutions, other convolutions,
elementwise fusions, copies, ...), summed over threads and divided by the
number of steps. The thread sum can exceed the
wall time: several devices, and the intra-op thread pool, run concurrently.
"""
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from absl import app
from absl import flags

_PRESET = flags.DEFINE_string('preset', 'official', 'Model preset.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny model and batch.')
_DEVICES = flags.DEFINE_integer('devices', 1, 'XLA CPU host devices.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Profiled steps (after warm-up).')
_TOP = flags.DEFINE_integer('top', 15, 'Operations listed.')
_TRACE_DIR = flags.DEFINE_string('trace_dir', None,
                                 'Where the trace is kept (default: a '
                                 'temporary directory).')


_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.-]+) = (\w+)\[([\d,]*)\]')


def output_shapes(hlo_text: str) -> dict:
  """{instruction name: output dims} for array-valued instructions."""
  shapes = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      shapes[match[1]] = tuple(int(d) for d in match[3].split(',') if d)
  return shapes


def _kind(name: str, shape: tuple) -> str:
  """A coarse kind for an XLA op: convolutions whose output is a small
  [Cin, kh, kw, Cout] are weight gradients (cpu_conv._weight_grad)."""
  lowered = name.lower()
  if re.search(r'conv|ynn|xnn', lowered):
    if len(shape) == 4 and 1 < shape[1] <= 7 and 1 < shape[2] <= 7:
      return 'convolution, weight gradient'
    return 'convolution, forward or input gradient'
  for kind, pattern in (('dot (matmul)', r'\bdot|einsum|gemm'),
                        ('reduce-window (max pool)', r'reduce-window'),
                        ('reduce', r'reduce'),
                        ('copy/transpose', r'copy|transpose'),
                        ('gather/scatter', r'gather|scatter'),
                        ('collective', r'all-reduce|all_reduce|collective'),
                        ('fusion (elementwise)', r'fusion'),):
    if re.search(pattern, lowered):
      return kind
  return 'other'


def summarise(trace_file: str, hlo_text: str, steps: int, top: int,
              wall: float) -> str:
  """A Markdown summary of the XLA op events in a Perfetto JSON trace, per
  thread (device) and per kind of op; `wall` is seconds per step."""
  with gzip.open(trace_file, 'rt') as f:
    events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  shapes = output_shapes(hlo_text)
  thread_names = {(e.get('pid'), e.get('tid')): e['args'].get('name')
                  for e in events
                  if e.get('ph') == 'M' and e.get('name') == 'thread_name'}
  by_name, by_kind = collections.Counter(), collections.Counter()
  by_thread = collections.Counter()
  for event in events:
    op = event.get('args', {}).get('hlo_op')
    if event.get('ph') != 'X' or 'dur' not in event or not op:
      continue  # Keep only what XLA's runtime executed (thunks).
    if op.startswith(('while', 'call', 'conditional')):
      continue  # Their spans hold their bodies' ops, counted on their own.
    seconds = event['dur'] / 1e6 / steps
    kind = _kind(op, shapes.get(op, ()))
    by_name[f'{op} ({kind})'] += seconds
    by_kind[kind] += seconds
    by_thread[thread_names.get((event.get('pid'), event.get('tid')),
                               str(event.get('tid')))] += seconds
  total = sum(by_kind.values())
  # Each XLA CPU device runs its thunks on its own thread: one row a device.
  lines = [f'| thread | busy s per step | busy share of the {wall:.2f} s '
           'wall |', '|---|---|---|']
  lines += [f'| {name} | {seconds:.3f} | {100 * seconds / wall:.0f}% |'
            for name, seconds in by_thread.most_common()]
  lines += ['', '| kind | s per step (thread sum) | share |', '|---|---|---|']
  lines += [f'| {kind} | {seconds:.3f} | {100 * seconds / total:.0f}% |'
            for kind, seconds in by_kind.most_common()]
  lines += ['', f'| top {top} operations | s per step | share |',
            '|---|---|---|']
  lines += [f'| `{name}` | {seconds:.3f} | {100 * seconds / total:.1f}% |'
            for name, seconds in by_name.most_common(top)]
  return '\n'.join(lines)


def main(argv):
  del argv
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') +
      f' --xla_force_host_platform_device_count={_DEVICES.value}').strip()
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import parallel, platforms  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import config as train_config  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top

  config = train_config.base_config(_PRESET.value)
  batch_size, patch = 16, 64
  if _SMOKE.value:
    config.model.update(channels=4, num_blocks=2, num_scales=2,
                        convs_per_scale=1)
    batch_size, patch = 2 * _DEVICES.value, 32
  mesh = parallel.make_mesh()
  model = platforms.model_for(config.model, mesh.devices.flat)
  optimizer = optax.adam(5e-4)
  step_fn = state_lib.make_train_step(model, optimizer, lambda _: 5e-4,
                                      config, mesh)
  state = parallel.replicate(state_lib.create_train_state(
      model, optimizer, patch, jax.random.key(0)), mesh)
  rng = np.random.default_rng(0)
  batch = parallel.shard_batch(
      {name: rng.random((batch_size, patch, patch, 3), dtype=np.float32)
       for name in ('rainy', 'clean')}, mesh)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  print(f'compiled in {time.perf_counter() - start:.1f} s', file=sys.stderr)
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix='dcsfn_profile_')
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
  wall = (time.perf_counter() - start) / _STEPS.value
  traces = glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'),
                     recursive=True)
  if not traces:
    sys.exit(f'error: no perfetto_trace.json.gz under {trace_dir}.')
  print(f'{_PRESET.value if not _SMOKE.value else "tiny"} preset, batch '
        f'{batch_size}x{patch}x{patch}, {_DEVICES.value} device(s): '
        f'{wall:.2f} s per profiled step (wall, profiler on); trace in '
        f'{trace_dir}\n')
  hlo = compiled.as_text()
  collectives = {kind: len(re.findall(rf' {kind}(?:-start)?\(', hlo))
                 for kind in ('all-reduce', 'collective-permute',
                              'all-gather', 'reduce-scatter', 'all-to-all')}
  print('collectives in the compiled step: ' + ', '.join(
      f'{count} {kind}' for kind, count in collectives.items()) + '\n')
  print(summarise(traces[0], hlo, _STEPS.value, _TOP.value, wall))


if __name__ == '__main__':
  app.run(main)
