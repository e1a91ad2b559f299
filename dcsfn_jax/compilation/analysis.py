"""What a compiled program says about itself on its target.

  memory       per-device argument, output, temporary bytes (XLA's
               memory_analysis), against the device's HBM
  cost         flops and bytes accessed per device (cost_analysis), where
               the backend gives them
  collectives  kind, count and bytes of every collective in the optimised
               HLO, and whether it sits inside a loop (runs every iteration)
  kernels      GPU: fusions and library calls (cuDNN, cuBLAS) the step
               launches, loop bodies counted once per iteration
  roofline     an ESTIMATE of the time: the larger of flops / published peak
               flop/s and bytes / published HBM bandwidth. It ignores
               latency, launch overheads and overlap; a lower bound, not a
               measurement.
"""
import re

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter',
               'collective-permute', 'all-to-all', 'collective-broadcast',
               'ragged-all-to-all')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2,
          'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8,
          'f64': 8, 'c64': 8, 'c128': 16, 'f8e4m3fn': 1, 'f8e5m2': 1}
# `%name = SHAPE op(` for an HLO instruction; comments such as /*index=5*/
# sit inside tuple shapes, so the op is found after the last ' = '.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([a-z][\w\-]*)'
                          r'\((.*)$')
_ARRAY = re.compile(r'\b([a-z]+\d*(?:e\dm\d\w*)?)\[([\d,]*)\]')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$')
_CALLED = re.compile(r'(?:body|condition|calls|to_apply|branch_computations|'
                     r'true_computation|false_computation)=\{?%?([\w.\-, %]+)')
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def shape_bytes(shape_text):
  """Bytes of the arrays in an HLO shape, e.g. '(f32[4,8]{1,0}, bf16[2])'
  -> 4*4*8 + 2*2. Layout and tiling annotations are ignored."""
  total = 0
  for dtype, dims in _ARRAY.findall(shape_text):
    if dtype not in _BYTES:
      continue
    count = 1
    for dim in filter(None, dims.split(',')):
      count *= int(dim)
    total += count * _BYTES[dtype]
  return total


def _computations(hlo_text):
  """{computation name: [instruction lines]} and the entry's name."""
  computations, current, entry = {}, None, None
  for line in hlo_text.splitlines():
    if current is None:
      match = _COMPUTATION.match(line)
      if match and not line.startswith((' ', '\t')):
        current = match.group(1)
        computations[current] = []
        if line.startswith('ENTRY'):
          entry = current
      continue
    if line.strip() == '}':
      current = None
      continue
    computations[current].append(line)
  return computations, entry


def _repeats(computations, entry):
  """{computation: how many times one run of the entry runs it}: loop
  bodies by their known trip count (1 where unknown). Fused computations
  and reducers (to_apply of a reduce or all-reduce) are excluded: they are
  part of the instruction that uses them."""
  repeats = {entry: 1}
  pending = [entry]
  while pending:
    name = pending.pop()
    for line in computations.get(name, ()):
      match = _INSTRUCTION.match(line)
      if not match or match.group(3) == 'fusion':
        continue
      trips = 1
      if match.group(3) == 'while':
        found = _TRIP_COUNT.search(line)
        trips = int(found.group(1)) if found else 1
      called = _CALLED.findall(
          line if match.group(3) == 'call' else line.split('to_apply=')[0])
      for group in called:
        for callee in re.split(r'[,\s%]+', group):
          if callee in computations and callee not in repeats:
            repeats[callee] = repeats[name] * trips
            pending.append(callee)
  return repeats


def collectives(hlo_text):
  """{kind: {'count', 'bytes', 'in_loop'}} of the collectives in optimised
  HLO text. count and bytes are per run of the program (a collective in a
  loop body counts once per known iteration); in_loop counts those inside
  a loop. Async pairs (-start/-done) count once, by their start."""
  computations, entry = _computations(hlo_text)
  repeats = _repeats(computations, entry) if entry else {}
  found = {}
  for name, lines in computations.items():
    if name not in repeats:
      continue
    for line in lines:
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      op = match.group(3)
      if op.endswith('-done'):
        continue
      kind = op[:-len('-start')] if op.endswith('-start') else op
      if kind not in COLLECTIVES:
        continue
      times = repeats[name]
      entry_figures = found.setdefault(kind, {'count': 0, 'bytes': 0,
                                              'in_loop': 0})
      entry_figures['count'] += times
      entry_figures['bytes'] += times * shape_bytes(match.group(2))
      if times > 1 or name != entry:
        entry_figures['in_loop'] += times if name != entry else 0
  return found


def kernel_count(hlo_text):
  """Kernels one run launches on a GPU: fusions, custom calls (cuDNN
  convolutions, cuBLAS) and the other instructions left outside fusions
  that compute (copies, collectives), loop bodies once per iteration."""
  computations, entry = _computations(hlo_text)
  if entry is None:
    return 0
  repeats = _repeats(computations, entry)
  free = ('parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast',
          'while', 'conditional', 'call', 'after-all', 'partition-id',
          'replica-id', 'opt-barrier', 'add-dependency')
  count = 0
  for name, times in repeats.items():
    for line in computations[name]:
      match = _INSTRUCTION.match(line)
      if match and match.group(3) not in free and not match.group(
          3).endswith('-done'):
        count += times
  return count


def memory(compiled):
  """{'argument', 'output', 'temp', 'alias', 'generated_code', 'total'}
  bytes per device; total = argument + output + temp - alias (donated
  arguments share their output's buffer). None where the backend gives no
  analysis."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  figures = {'argument': stats.argument_size_in_bytes,
             'output': stats.output_size_in_bytes,
             'temp': stats.temp_size_in_bytes,
             'alias': stats.alias_size_in_bytes,
             'generated_code': stats.generated_code_size_in_bytes}
  figures['total'] = (figures['argument'] + figures['output']
                      + figures['temp'] - figures['alias'])
  return figures


def _cost_figures(stage):
  try:
    figures = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # a backend without one
    return {}
  if isinstance(figures, (list, tuple)):
    figures = figures[0] if figures else None
  return figures or {}


def cost(compiled, lowered=None):
  """{'flops', 'bytes_accessed', 'cost_source'}: per device, from the
  compiled program's cost analysis, else (XLA:GPU's compile-only client
  gives none) from `lowered`'s, i.e. the HLO before XLA's optimisations,
  whose bytes count every intermediate as if nothing were fused; None for
  figures neither gives."""
  source = 'compiled'
  figures = _cost_figures(compiled)
  if not figures.get('flops') and lowered is not None:
    source, figures = 'lowered (unfused)', _cost_figures(lowered)
  flops = figures.get('flops')
  accessed = figures.get('bytes accessed')
  return {'flops': float(flops) if flops else None,
          'bytes_accessed': float(accessed) if accessed else None,
          'cost_source': source if flops else None}


def roofline_seconds(flops, bytes_accessed, peak_flops, bandwidth):
  """ESTIMATED seconds of one run: max(flops / peak flop/s, bytes / HBM
  bytes/s); None without both figures."""
  if not flops or not bytes_accessed:
    return None
  return max(flops / peak_flops, bytes_accessed / bandwidth)
