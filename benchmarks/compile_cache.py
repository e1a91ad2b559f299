r"""Time to the first result with and without the persistent compilation cache.

  python benchmarks/compile_cache.py --workdir /tmp/dcsfn_demo \
      --data_dir ~/tensorflow_datasets --photos '/tmp/clean_photos/*.png' \
      --output /tmp/cache_measure

Runs each command as a user would, three ways: --compile_cache=off, then into
an empty cache folder (the run that fills it), then again with that folder
(the second run, which reads it). Cases: `evaluate` of WORKDIR (first result:
the first derained PNG), `derain` of the photos (the first output PNG), and
training resumed from WORKDIR's newest checkpoint for 10 more steps on a
fresh copy of it (the first training step logged: --config.log_every_steps=1).
Prints a markdown table: seconds to the first result and for the whole
command, medians over --repeats.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

_POLL_S = 0.1


def _first_png(folder):
  return bool(glob.glob(os.path.join(folder, '*.png')))


def _first_train_step(workdir, resumed_from):
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as file:
      rows = [json.loads(line) for line in file if line.strip()]
  except (OSError, ValueError):
    return False
  return any(row['step'] > resumed_from and 'train/loss' in row
             for row in rows)


def _timed(command, first_result):
  """(seconds to first_result() true, seconds to exit) of `command`."""
  start = time.monotonic()
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  first = None
  while process.poll() is None:
    if first is None and first_result():
      first = time.monotonic() - start
    time.sleep(_POLL_S)
  total = time.monotonic() - start
  if process.returncode:
    sys.exit(f'{" ".join(command)} failed:\n{process.stderr.read()[-3000:]}')
  return (first if first is not None else total), total


def _cases(args):
  """name -> (command for (cache, run folder), first-result check)."""
  steps = sorted(int(name) for name in os.listdir(
      os.path.join(args.workdir, 'checkpoints')) if name.isdigit())
  resumed_from = steps[-1]

  def evaluate(cache, run):
    command = [sys.executable, '-m', 'dcsfn_jax.evaluate',
               f'--workdir={args.workdir}', f'--data_dir={args.data_dir}',
               f'--output={run}', f'--compile_cache={cache}']
    return command, lambda: _first_png(os.path.join(run, 'derained'))

  def derain(cache, run):
    command = [sys.executable, '-m', 'dcsfn_jax.derain',
               f'--workdir={args.workdir}', f'--input={args.photos_dir}',
               f'--output={run}', f'--compile_cache={cache}']
    return command, lambda: _first_png(run)

  def train(cache, run):
    shutil.copytree(args.workdir, run)
    command = [sys.executable, '-m', 'dcsfn_jax.train',
               f'--config={args.config}', f'--workdir={run}',
               f'--config.data_dir={args.data_dir}',
               f'--config.total_steps={resumed_from + 10}',
               '--config.log_every_steps=1', f'--compile_cache={cache}']
    return command, lambda: _first_train_step(run, resumed_from)

  return {'evaluate': evaluate, 'derain': derain, 'train (resumed)': train}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--photos', required=True, help='a glob of photos')
  parser.add_argument('--config', default='configs/demo.py')
  parser.add_argument('--output', required=True, help='a fresh folder')
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--cases', default='evaluate,derain,train (resumed)')
  args = parser.parse_args()
  os.makedirs(args.output)
  args.photos_dir = os.path.join(args.output, 'photos')
  os.makedirs(args.photos_dir)
  for photo in sorted(glob.glob(args.photos)):
    shutil.copy(photo, args.photos_dir)

  print('| command | without cache: first result / whole | second run '
        'with cache: first result / whole | run that fills the cache: '
        'whole | cache size |')
  print('|---|---|---|---|---|')
  cases = _cases(args)
  for name in args.cases.split(','):
    times = {'off': [], 'fill': [], 'warm': []}
    size = 0
    for repeat in range(args.repeats):
      cache = os.path.join(args.output, f'cache_{name.split()[0]}_{repeat}')
      for mode in ('off', 'fill', 'warm'):
        run = os.path.join(args.output, f'{name.split()[0]}_{mode}_{repeat}')
        command, first_result = cases[name]('off' if mode == 'off' else cache,
                                            run)
        times[mode].append(_timed(command, first_result))
      size = sum(os.path.getsize(path) for path in
                 glob.glob(os.path.join(cache, '*-cache')))
    median = {mode: [statistics.median(t[i] for t in runs) for i in (0, 1)]
              for mode, runs in times.items()}
    print(f"| {name} | {median['off'][0]:.1f} / {median['off'][1]:.1f} s "
          f"| {median['warm'][0]:.1f} / {median['warm'][1]:.1f} s "
          f"| {median['fill'][1]:.1f} s | {size / 1e6:.1f} MB |", flush=True)


if __name__ == '__main__':
  main()
