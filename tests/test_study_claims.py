"""Claims and the runner's bookkeeping, with a stand-in trainer (a script
that writes what `dcsfn_jax.train` writes, or fails as a diverged run
does), so that nothing compiles: failed runs keep their reason, a rerun
trains nothing, racing processes take a run once, dead holders are
recognised."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax.studies import claims
from dcsfn_jax.studies import report
from dcsfn_jax.studies import runner
from dcsfn_jax.studies import runs
import tiny_study

_FAKE_TRAIN = textwrap.dedent('''\
    import json, os, pathlib, sys
    args = dict(arg.split('=', 1) for arg in sys.argv[1:] if '=' in arg)
    with open(os.environ['FAKE_TRAIN_CALLS'], 'a') as calls:
      calls.write(args['--workdir'] + '\\n')
    if args.get('--config.learning_rate') == '1e+30':
      print('step 2/4: loss nan', file=sys.stderr)
      print('error: Non-finite training loss (nan) or parameters at step 2; '
            'stopped.', file=sys.stderr)
      sys.exit(1)
    workdir = pathlib.Path(args['--workdir'])
    workdir.mkdir(parents=True, exist_ok=True)
    seed = int(args['--config.seed'])
    (workdir / 'metrics.jsonl').write_text(
        json.dumps({'step': 2, 'train/loss': -0.5}) + '\\n'
        + json.dumps({'step': 4, 'eval/psnr': 20.0 + seed,
                      'eval/ssim': 0.5 + seed / 10}) + '\\n')
    print('step 4/4: loss -0.6', file=sys.stderr)
    ''')


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
  """Runs the stand-in instead of `python -m dcsfn_jax.train`; the file
  lists the workdir of every run it was started on."""
  script = tmp_path / 'fake_train.py'
  script.write_text(_FAKE_TRAIN)
  calls = tmp_path / 'train_calls.txt'
  calls.write_text('')
  monkeypatch.setenv('FAKE_TRAIN_CALLS', str(calls))
  monkeypatch.setattr(runner, '_command',
                      lambda args, cache: [sys.executable, str(script),
                                           *args[1:]])
  monkeypatch.setattr(runner, 'POLL_SECONDS', 0.05)
  return calls


def _diverging_study(tmp_path):
  study = tiny_study.load(tiny_study.write_study(
      tmp_path, tmp_path / 'data', variants=[
          {'name': 'full'},
          {'name': 'diverges', 'overrides': {'learning_rate': 1e30}}]))
  workdir = checkpointing.as_path(tmp_path / 'study')
  workdir.mkdir()
  return study, workdir


def test_a_diverged_run_is_failed_with_its_reason_and_not_retrained(
    tmp_path, fake_trainer, capsys):
  study, workdir = _diverging_study(tmp_path)
  everything = runs.all_runs(study)
  outcome = runner.run_share(study, workdir, everything, 0)
  assert outcome == {'done': ['full/seed_0', 'full/seed_1'],
                     'failed': ['diverges/seed_0', 'diverges/seed_1'],
                     'skipped': []}
  failed = runs.status(workdir, runs.Run('diverges', 0))
  assert failed.state == 'failed'
  assert failed.reason == ('Non-finite training loss (nan) or parameters at '
                           'step 2; stopped.')
  assert failed.attempts[-1]['step'] == 2
  done = runs.status(workdir, runs.Run('full', 1))
  assert done.result == {'official/psnr': 21.0, 'official/ssim': 0.6,
                         'step': 4}
  content, _ = report.write(study, workdir)
  assert '2 failed' in report.summary_line(content)
  assert len(fake_trainer.read_text().splitlines()) == 4
  lines = capsys.readouterr().out.splitlines()
  assert lines[-1] == '[tiny] 2/4 done, 2 failed, 0 left'

  # A rerun trains nothing; --retry_failed trains the failed runs only.
  assert runner.run_share(study, workdir, everything, 0) == {
      'done': [], 'failed': [], 'skipped': []}
  assert len(fake_trainer.read_text().splitlines()) == 4
  runner.run_share(study, workdir, everything, 0, retry_failed=True)
  retried = fake_trainer.read_text().splitlines()[4:]
  assert sorted(retried) == sorted(
      str(runs.folder(workdir, runs.Run('diverges', seed))) for seed in (0, 1))
  assert len(runs.status(workdir, runs.Run('diverges', 0)).attempts) == 2


def test_shares_partition_the_runs_seed_by_seed(tmp_path):
  study = tiny_study.load(tiny_study.write_study(tmp_path, tmp_path / 'data',
                                                 seeds=3))
  everything = [run.name for run in runs.all_runs(study)]
  assert everything == ['full/seed_0', 'no_cross/seed_0', 'full/seed_1',
                        'no_cross/seed_1', 'full/seed_2', 'no_cross/seed_2']
  shares = [[run.name for run in runs.share(runs.all_runs(study), i, 4)]
            for i in range(4)]
  assert sorted(sum(shares, [])) == sorted(everything)
  assert shares[0] == ['full/seed_0', 'full/seed_2']


def _holder(pid, host=None, heartbeat=None):
  return {'state': 'running', 'holder': {'pid': pid,
                                         'host': host or socket.gethostname()},
          'child_pid': None, 'heartbeat': (claims.now() if heartbeat is None
                                           else heartbeat)}


def test_a_dead_holder_is_recognised_by_pid_or_heartbeat():
  gone = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  gone_pid = int(gone.stdout)
  assert claims.is_dead(_holder(gone_pid))
  assert not claims.is_dead(_holder(os.getpid()))
  # Another host's pid cannot be asked: only its heartbeat counts.
  assert not claims.is_dead(_holder(gone_pid, host='elsewhere'))
  stale = claims.now() - claims.TIMEOUT_SECONDS - 1
  assert claims.is_dead(_holder(os.getpid(), host='elsewhere',
                                heartbeat=stale))
  # The holder is dead only when its trainer is gone too.
  alive_child = {**_holder(gone_pid), 'child_pid': os.getpid()}
  assert not claims.is_dead(alive_child)


_RACE = textwrap.dedent('''\
    import pathlib, sys, time
    from dcsfn_jax.studies import claims
    workdir = pathlib.Path(sys.argv[1])
    while time.time() < float(sys.argv[2]):
      pass
    claim = claims.take(workdir, 'full/seed_0', int(sys.argv[3]))
    print('won' if claim else 'lost')
    ''')


@pytest.mark.parametrize('before', ['absent', 'released', 'dead'])
def test_racing_processes_take_a_run_once(tmp_path, before):
  workdir = checkpointing.as_path(tmp_path)
  path = claims.path_of(workdir, 'full/seed_0')
  path.parent.mkdir(parents=True)
  if before == 'released':
    claims.replace(path, {**_holder(1), 'state': 'released'})
  elif before == 'dead':
    claims.replace(path, _holder(os.getpid(), host='elsewhere', heartbeat=0))
  start = claims.now() + 1.0
  racers = [subprocess.Popen([sys.executable, '-c', _RACE, str(tmp_path),
                              str(start), str(task)], stdout=subprocess.PIPE,
                             text=True) for task in range(6)]
  results = [racer.communicate(timeout=120)[0].strip() for racer in racers]
  assert sorted(results) == ['lost'] * 5 + ['won'], results
  winner = results.index('won')
  assert json.loads(path.read_text())['holder']['task'] == winner
