"""A real study: 2 variants x 2 seeds of the smoke config, trained by two
`python -m dcsfn_jax.study` processes (task 0 and task 1 of 2) on one
workdir, task 0 stopped by SIGTERM in the middle of its first run and
started again. The claims' histories prove that no run was trained twice;
a rerun trains nothing."""
import os
import signal
import subprocess
import sys
import time

import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax.studies import runs
from dcsfn_jax.studies import spec
import tiny_study

TOTAL_STEPS = 200
pytestmark = pytest.mark.slow


def _start(path, workdir, env, *flags):
  return subprocess.Popen(
      [sys.executable, '-m', 'dcsfn_jax.study', f'--study={path}',
       f'--workdir={workdir}', *flags], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _wait_for_step(log, process, timeout=600):
  """Waits until the trainer of `log` has logged a step before its last."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    progress = runs.last_progress(log)
    if progress and 0 < progress[0] < TOTAL_STEPS:
      return progress[0]
    assert process.poll() is None, process.communicate()
    time.sleep(0.05)
  raise AssertionError(f'no training step in {log} after {timeout} s')


@pytest.fixture(scope='module')
def studied(tmp_path_factory, synthetic_data_dir):
  """(study, workdir, outputs): the study run by two tasks, task 0
  interrupted once; outputs are each process's (returncode, out, err)."""
  folder = tmp_path_factory.mktemp('study_runs')
  path = tiny_study.write_study(folder, synthetic_data_dir, overrides={
      'total_steps': TOTAL_STEPS, 'log_every_steps': 5,
      'checkpoint_every_steps': 5, 'eval_every_steps': TOTAL_STEPS,
      'eval_max_images': 2})
  workdir = folder / 'study'
  env = {**os.environ, 'DCSFN_COMPILE_CACHE': str(folder / 'cache')}
  task_0 = _start(path, workdir, env, '--task_index=0', '--num_tasks=2')
  task_1 = _start(path, workdir, env, '--task_index=1', '--num_tasks=2')
  first = runs.log_path(checkpointing.as_path(workdir), runs.Run('full', 0))
  _wait_for_step(first, task_0)
  task_0.send_signal(signal.SIGTERM)
  outputs = {'stopped': (task_0.wait(timeout=300),
                         *task_0.communicate())}
  restarted = _start(path, workdir, env, '--task_index=0', '--num_tasks=2')
  outputs['restarted'] = (restarted.wait(timeout=900),
                          *restarted.communicate())
  outputs['task_1'] = (task_1.wait(timeout=900), *task_1.communicate())
  return tiny_study.load(path), checkpointing.as_path(workdir), outputs


def test_the_stopped_task_exits_as_signalled_and_resumes(studied):
  study, workdir, outputs = studied
  returncode, _, err = outputs['stopped']
  assert returncode == 128 + signal.SIGTERM, err
  assert 'the same command resumes the study' in err
  status = runs.status(workdir, runs.Run('full', 0))
  assert [a['outcome'] for a in status.attempts] == ['interrupted', 'done']
  stopped_at = status.attempts[0]['step']
  assert 0 < stopped_at < TOTAL_STEPS
  # The second attempt's trainer resumed from the saved step, not step 0.
  log = runs.log_path(workdir, runs.Run('full', 0)).read_text()
  second = log.split('\n=== ')[2]
  assert runs._STEP.findall(second)[0][0] != '5', second  # pylint: disable=protected-access
  assert outputs['restarted'][0] == 0, outputs['restarted'][2]
  assert outputs['task_1'][0] == 0, outputs['task_1'][2]
  del study


def test_the_claims_prove_no_run_was_trained_twice(studied):
  study, workdir, _ = studied
  for index, run in enumerate(runs.all_runs(study)):
    status = runs.status(workdir, run)
    assert status.state == 'done', (run, status)
    outcomes = [a['outcome'] for a in status.attempts]
    assert outcomes.count('done') == 1 and outcomes[-1] == 'done', outcomes
    # Every attempt was made by the run's own share.
    assert {a['task'] for a in status.attempts} == {index % 2}, run
    # One trainer started per attempt, none outside the claims.
    log = runs.log_path(workdir, run).read_text()
    assert log.count('\n=== ') == len(status.attempts), run


def test_each_run_is_an_ordinary_training_workdir_of_its_config(studied):
  study, workdir, _ = studied
  for run in runs.all_runs(study):
    _, saved = checkpointing.load_pretrained(runs.folder(workdir, run))
    variant = study.variant(run.variant)
    assert saved.seed == run.seed
    assert spec.identity_fields(saved) == spec.identity_fields(
        variant.config), run
    assert saved.model.cross_scale == (run.variant == 'full')


def test_a_rerun_trains_nothing_and_prints_the_table(studied):
  study, workdir, _ = studied
  logs = {run: runs.log_path(workdir, run).read_text()
          for run in runs.all_runs(study)}
  result = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.study', f'--study={study.path}',
       f'--workdir={workdir}'], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert logs == {run: runs.log_path(workdir, run).read_text()
                  for run in runs.all_runs(study)}
  assert '4 runs: 4 done, 0 failed, 0 not finished' in result.stdout
  assert '| full | official | 2 |' in result.stdout
  assert (workdir / 'plots' / 'curves.png').exists()


def test_report_only_writes_the_report_and_trains_nothing(studied):
  study, workdir, _ = studied
  for name in ('study.md', 'study.csv', 'study.json'):
    (workdir / name).unlink()
  claims_before = sorted(p.read_text() for p in (workdir / 'claims').glob(
      '*.json'))
  result = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.study', f'--study={study.path}',
       f'--workdir={workdir}', '--report_only'], capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert '| no_cross | official | 2 |' in (workdir / 'study.md').read_text()
  assert (workdir / 'study.csv').exists() and (workdir / 'study.json').exists()
  assert claims_before == sorted(p.read_text() for p in (
      workdir / 'claims').glob('*.json'))
