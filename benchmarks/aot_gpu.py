r"""Compiles the commands' programs for 8-GPU hosts on a CPU host; appends the
table to benchmarks/RESULTS.md.

  python -m venv --system-site-packages /work/venvs/cuda
  JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 /work/venvs/cuda/bin/pip install \
      'jax[cuda12]==0.10.2'                  # about 5 GB, no GPU needed
  JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1 /work/venvs/cuda/bin/python \
      benchmarks/aot_gpu.py [--config configs/rain100h.py] [--program train]

The same machinery as `python -m dcsfn_jax.aot` (dcsfn_jax/compilation):
A100 80 GB x 8, H100 x 8, H200 x 8 and two H100 hosts, each described to
XLA's GPU compiler by a GpuTargetConfigProto written from the published
device facts (dcsfn_jax/compilation/targets.py). A target the installed
libraries cannot describe is one row. Step times are roofline ESTIMATES.
The CUDA wheels are too large for CI, so the figures live in RESULTS.md.
"""
import datetime
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from dcsfn_jax import cli
from dcsfn_jax.compilation import programs
from dcsfn_jax.compilation import report
from dcsfn_jax.compilation import targets

config_flags.DEFINE_config_file('config', 'configs/rain100h.py',
                                'Training config file.', lock_config=True)
_TARGETS = flags.DEFINE_multi_string('target', list(targets.GPU_TARGETS),
                                     targets.HELP)
_PROGRAMS = flags.DEFINE_multi_enum('program', list(programs.PROGRAMS),
                                    list(programs.PROGRAMS), 'Programs.')
_DTYPES = flags.DEFINE_multi_enum('dtype', ['float32'],
                                  ['float32', 'bfloat16'], 'Compute dtypes.')
_BATCH_SEARCH = flags.DEFINE_bool('batch_search', False, 'Search the largest '
                                  'per-device batch by compiling.')
_RESULTS_MD = flags.DEFINE_string('results_md', 'benchmarks/RESULTS.md',
                                  'Markdown file the section is appended to.')


def main(argv):
  del argv
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  cli.errors_only_logging()
  config = cli.loaded_config('configs/rain100h.py')
  rows = []
  for dtype in _DTYPES.value:
    for name in _TARGETS.value:
      for row in report.compile_target(
          report.with_dtype(config, dtype), name,
          programs_to_run=_PROGRAMS.value,
          batch_search=_BATCH_SEARCH.value):
        rows.append(row)
        print(report.table([row])[-1], flush=True)
  print('\n'.join(report.table(rows)))
  date = datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M UTC')
  command = 'python benchmarks/aot_gpu.py ' + ' '.join(sys.argv[1:])
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  section = (f'\n{report.markdown(rows, f"{date} — ahead-of-time compiles for GPU hosts")}'
             f'\n`{command}` on a CPU host without a GPU (load average '
             f'{load} at the end: compile times include the contention).\n')
  with open(_RESULTS_MD.value, 'a', encoding='utf-8') as file:
    file.write(section)
  print(f'Appended to {_RESULTS_MD.value}.')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.flags_parser())
