"""Compiling the programs for each target, and the table of what came out.

`compile_target` runs every program for one target and returns its rows;
`table`, `markdown` and the rows themselves (JSON) are what `python -m
dcsfn_jax.aot` prints and writes. Step times are ESTIMATES (the roofline of
`analysis`), never measurements.
"""
import time

import ml_collections

from dcsfn_jax.compilation import analysis
from dcsfn_jax.compilation import programs
from dcsfn_jax.compilation import targets
from dcsfn_jax.training import config as config_lib
from dcsfn_jax.training import inputs
from dcsfn_jax.training import memory as memory_lib

GB = 1e9


def _one_line(error):
  text = ' '.join(str(error).split())
  return text if len(text) <= 240 else text[:237] + '...'


def check_batch(config, target):
  """The trainer's one-line error (`inputs.check_batch_split`) when
  config.batch_size does not split over the target's devices and hosts;
  None when it does."""
  try:
    inputs.check_batch_split(config, target.devices, target.hosts)
  except config_lib.ConfigError as error:
    return f'{target.name}: {error}'
  return None


def _compiled_row(program, target, seconds, compiled):
  """A table row of a compiled program."""
  row = {'program': program.name, 'status': 'compiled',
         'compile_s': round(seconds, 1), 'dtype': program.dtype,
         'precision': program.precision, 'note': program.note}
  if program.remat is not None:
    row['remat'] = program.remat
  figures = analysis.memory(compiled)
  row['memory'] = figures
  if figures is not None:
    row['fits'] = figures['total'] <= target.memory_bytes
  hlo = compiled.as_text()
  row['collectives'] = analysis.collectives(hlo)
  if target.platform == 'gpu':
    row['kernels'] = analysis.kernel_count(hlo)
  row.update(analysis.cost(compiled, program.lowered))
  row['estimate_s'] = analysis.roofline_seconds(
      row['flops'], row['bytes_accessed'],
      target.flops_per_second(program.dtype, program.precision),
      target.bandwidth)
  return row


def compile_program(build, target, log_path=None):
  """(row, compiled or None) of the program `build()` lowers; a compiler
  error is the row's status, one line."""
  start = time.perf_counter()
  try:
    with targets.quiet_native_stderr(log_path):
      program = build()
      compiled = program.lowered.compile()
  except Exception as error:  # pylint: disable=broad-except  # the compiler's
    return {'status': f'error: {_one_line(error)}',
            'compile_s': round(time.perf_counter() - start, 1)}, None
  return _compiled_row(program, target, time.perf_counter() - start,
                       compiled), compiled


def step_estimate(config, devices):
  """{'device_kind', 'compile_s', 'flops', 'bytes_accessed', 'estimate_s',
  'note'} of the train step of `config` compiled for `devices` (real ones:
  benchmarks/device_check.py sets it beside the measured step time).
  estimate_s is None for a device without published peak figures here."""
  kind = devices[0].device_kind
  target = targets.for_device_kind(kind)
  start = time.perf_counter()
  program = programs.train_step(config, devices)
  compiled = program.lowered.compile()
  figures = {'device_kind': kind,
             'compile_s': round(time.perf_counter() - start, 1),
             **analysis.cost(compiled, program.lowered),
             'estimate_s': None, 'note': program.note}
  if target is None:
    figures['note'] = f'no published peak figures for {kind!r}'
  else:
    figures['estimate_s'] = analysis.roofline_seconds(
        figures['flops'], figures['bytes_accessed'],
        target.flops_per_second(program.dtype, program.precision),
        target.bandwidth)
  return figures


def augmentation_share(config, target, devices, row, log_path=None):
  """{'augment_bytes', 'augment_flops', 'estimate_without_augment_s'}: the
  cost of the released augmentation compiled alone on one device's share of
  the batch, and the train row's roofline without it. XLA:TPU's cost
  analysis charges its gathers far more bytes than the windows hold (35 GB
  for the 2 patches of a v5e-8 device; benchmarks/RESULTS.md); whether the
  hardware pays them only a run on it can tell. Empty for another augment,
  or without cost figures."""
  if config.augment != 'released' or not row.get('bytes_accessed'):
    return {}
  images = config.batch_size // target.devices
  part, _ = compile_program(
      lambda: programs.augmentation(config, devices[0], images), target,
      log_path)
  if not part.get('bytes_accessed'):
    return {}
  flops = max(0.0, row['flops'] - (part['flops'] or 0.0))
  accessed = max(0.0, row['bytes_accessed'] - part['bytes_accessed'])
  return {'augment_bytes': part['bytes_accessed'],
          'augment_flops': part['flops'],
          'estimate_without_augment_s': analysis.roofline_seconds(
              flops, accessed,
              target.flops_per_second(row['dtype'], row['precision']),
              target.bandwidth)}


def largest_batch(total_bytes, share, known_total, memory_bytes,
                  max_compiles=3):
  """The largest per-device batch found to fit by compiling, whether that is
  only a lower bound, and the (per-device batch, total bytes or None) of
  every compile.

  Memory grows about linearly with the batch: after doubling the known
  share once, each next size is the one the last two compiles predict to
  fill `memory_bytes`, rounded down to a power of two times the share, and
  confirmed by compiling; at most `max_compiles` compiles. Where memory did
  not grow ('auto' remat turned on between the two sizes), the next size is
  twice the last. The search ends at a size that does not fit, or when the
  line predicts that the next power of two would not; when it ends on the
  compile limit instead, more may fit and the result is a lower bound.

  Args:
    total_bytes: per-device batch -> per-device bytes of the compiled step,
      or None when it does not compile (e.g. the compiler runs out of
      memory).
    share: the per-device batch already compiled, using `known_total` bytes
      (which fit).
    memory_bytes: the device's memory.

  Returns:
    (largest, lower_bound, tried).
  """
  tried = [(share, known_total)]
  best, size = share, share * 2
  for _ in range(max_compiles):
    total = total_bytes(size)
    tried.append((size, total))
    if total is None or total > memory_bytes:
      return best, False, tried
    best = size
    (b0, m0), (b1, m1) = tried[-2], tried[-1]
    if m1 <= m0:
      size *= 2
      continue
    predicted = b1 + (memory_bytes - m1) / ((m1 - m0) / (b1 - b0))
    next_size = share * 2 ** max(0, int(predicted // share).bit_length() - 1)
    if next_size <= size:
      return best, False, tried
    size = next_size
  return best, True, tried


def _step_bytes(config, target, devices, log_path):
  """per-device batch -> per-device bytes of the compiled train step (None
  for a compiler error)."""

  def total_bytes(per_device):
    row, _ = compile_program(
        lambda: programs.train_step(config, devices,
                                    per_device * target.devices,
                                    target.memory_bytes), target, log_path)
    return (row.get('memory') or {}).get('total')

  return total_bytes


def compile_target(config, target_name, *, programs_to_run=programs.PROGRAMS,
                   batch_search=True, log_path=None):
  """The rows of every program for one target: a list of dicts."""
  base = {'target': target_name}
  try:
    target = targets.get(target_name)
    base.update(kind=target.kind, devices=target.devices, hosts=target.hosts,
                device_memory=target.memory_bytes)
    devices = targets.compile_only_devices(target, log_path)
  except targets.TargetError as error:
    return [{**base, 'program': '-', 'status': f'unavailable: {error}'}]
  rows = []
  for name in programs_to_run:
    if name == 'train':
      problem = check_batch(config, target)
      if problem:
        rows.append({**base, 'program': 'train',
                     'dtype': config.model.dtype,
                     'status': f'error: {problem}'})
        continue
      row, _ = compile_program(
          lambda: programs.train_step(config, devices,
                                      memory_bytes=target.memory_bytes),
          target, log_path)
      row['batch'] = config.batch_size
      row['per_device'] = memory_lib.images_per_device(config,
                                                       target.devices)
      row.update(augmentation_share(config, target, devices, row, log_path))
      if batch_search and row.get('fits'):
        (row['largest_per_device'], row['largest_is_lower_bound'],
         row['batch_search']) = largest_batch(
             _step_bytes(config, target, devices, log_path),
             row['per_device'], row['memory']['total'], target.memory_bytes)
    elif name == 'evaluate':
      row, _ = compile_program(
          lambda: programs.evaluate_step(config.model, devices), target,
          log_path)
    else:
      row, _ = compile_program(
          lambda: programs.derain_forward(config.model, devices), target,
          log_path)
    rows.append({**base, 'program': name, **row})
  return rows


def with_dtype(config, dtype):
  """A copy of `config` whose model computes in `dtype`."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.dtype = dtype
  config_lib.validate(config)
  return config


# -------------------------------------------------------------- the table

def _gb(value):
  return '-' if value is None else f'{value / GB:.2f}'


def _collective_cell(found):
  if not found:
    return 'none'
  parts = []
  for kind, figures in sorted(found.items()):
    loop = f', {figures["in_loop"]} in loops' if figures['in_loop'] else ''
    parts.append(f'{kind} x{figures["count"]} '
                 f'({figures["bytes"] / 1e6:.2f} MB{loop})')
  return '; '.join(parts)


def _time_cell(seconds):
  if seconds is None:
    return '-'
  return f'~{seconds * 1e3:.2f} ms' if seconds < 1 else f'~{seconds:.2f} s'


def _accessed_cell(row):
  text = _gb(row.get('bytes_accessed'))
  if row.get('augment_bytes'):
    text += f' (aug. {_gb(row["augment_bytes"])})'
  return text


def _estimate_cell(row):
  text = _time_cell(row.get('estimate_s'))
  if row.get('estimate_without_augment_s'):
    text += f' ({_time_cell(row["estimate_without_augment_s"])} w/o aug.)'
  return text


COLUMNS = ('target', 'program', 'dtype', 'status', 'compile', 'args GB',
           'temp GB', 'out GB', 'total/HBM GB', 'fits', 'remat',
           'max batch/dev', 'collectives', 'GFLOP', 'GB accessed',
           'ESTIMATE (roofline)', 'kernels')
# 'aug.': the share of the released augmentation's gathers, compiled alone
# (`augmentation_share`), and the estimate without it.


def cells(row):
  """The COLUMNS of one row, as text."""
  if row['status'] != 'compiled':
    return [row['target'], row.get('program', '-'), row.get('dtype', '-'),
            row['status']] + ['-'] * (len(COLUMNS) - 4)
  figures = row.get('memory') or {}
  total = figures.get('total')
  remat = row.get('remat')
  largest = row.get('largest_per_device')
  return [
      row['target'], row['program'], row['dtype'], 'compiled',
      f'{row["compile_s"]:.0f} s', _gb(figures.get('argument')),
      _gb(figures.get('temp')), _gb(figures.get('output')),
      f'{_gb(total)}/{row["device_memory"] / GB:.0f}',
      {True: 'yes', False: 'NO'}.get(row.get('fits'), '-'),
      '-' if remat is None else ('on' if remat else 'off'),
      '-' if 'largest_per_device' not in row else (
          ('>=' if row.get('largest_is_lower_bound') else '') + str(largest)),
      _collective_cell(row.get('collectives')),
      '-' if row.get('flops') is None else f'{row["flops"] / 1e9:.1f}',
      _accessed_cell(row),
      _estimate_cell(row),
      str(row['kernels']) if 'kernels' in row else '-']


def table(rows):
  """The rows as aligned plain-text lines."""
  grid = [list(COLUMNS)] + [cells(row) for row in rows]
  widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
  # A long status (an error) spills over the columns after it.
  return ['  '.join(cell.ljust(width) for cell, width in zip(line, widths)
                    ).rstrip() if line[3] in ('compiled', 'status') else
          '  '.join(line[:3]) + '  ' + line[3] for line in grid]


def markdown(rows, title):
  """The rows as a Markdown table under `title`."""
  lines = [f'## {title}', '',
           'Step times are ROOFLINE ESTIMATES from published peak flop/s and '
           'HBM bandwidth, not measurements. Memory is per device, from '
           "XLA's memory analysis of the compiled program. 'aug.' is what "
           "the cost analysis charges the released augmentation's gathers "
           '(compiled alone); the estimate without it follows in brackets.',
           '',
           '| ' + ' | '.join(COLUMNS) + ' |',
           '|' + '---|' * len(COLUMNS)]
  for row in rows:
    lines.append('| ' + ' | '.join(c.replace('|', '/') for c in cells(row))
                 + ' |')
  return '\n'.join(lines) + '\n'
