"""Every config and workdir mistake of `python -m dcsfn_jax.train` is one
`error:` line naming the field or folder and the fix, with no traceback, and
a run that never started leaves no workdir behind."""
import os
import shutil
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import platforms
from dcsfn_jax.training import config as train_config
from dcsfn_jax.training import resume
from dcsfn_jax.training import state as state_lib
from dcsfn_jax.training import trainer
import cli_checks
import smoke_config

# Every run compiles the same smoke programs: the first run's are reused
# (conftest.shared_compile_cache).
pytestmark = pytest.mark.usefixtures('shared_compile_cache')

_REPO = pathlib.Path(__file__).resolve().parents[1]
_DEMO = _REPO / 'configs' / 'demo.py'


def _train(*args, env=None, cwd=None):
  environment = {**os.environ, 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true',
                 **(env or {})}
  return subprocess.run([sys.executable, '-m', 'dcsfn_jax.train', *args],
                        capture_output=True, text=True, timeout=300,
                        check=False, env=environment, cwd=cwd)


def _one_error_line(result):
  assert result.returncode != 0, result.stdout[-2000:]
  return cli_checks.error_line(result)


def _smoke_args(workdir, data_dir, *extra):
  return (f'--config={_DEMO}:smoke', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}', *extra)


@pytest.mark.parametrize('override,expected', [
    ('--config.foo=1', "the config has no field 'foo'"),
    ('--config.batch_sise=4', "did you mean --config.batch_size?"),
    ('--config.model.chanels=4', "config.model has no field 'chanels' "
                                 "(did you mean --config.model.channels?)"),
])
def test_unknown_fields_get_a_did_you_mean(tmp_path, override, expected):
  line = _one_error_line(_train(f'--config={_DEMO}:smoke',
                                f'--workdir={tmp_path / "run"}', override))
  assert expected in line and 'dcsfn_jax/training/config.py' in line
  assert not (tmp_path / 'run').exists()


def test_a_negative_batch_size_is_named(tmp_path):
  line = _one_error_line(_train(f'--config={_DEMO}:smoke',
                                f'--workdir={tmp_path / "run"}',
                                '--config.batch_size=-4'))
  assert 'batch_size=-4 must be a positive integer' in line
  assert not (tmp_path / 'run').exists()


def test_a_missing_config_file_is_named(tmp_path):
  line = _one_error_line(_train('--config=configs/nope.py',
                                f'--workdir={tmp_path / "run"}'))
  assert 'does not exist' in line and 'configs/demo.py' in line


def test_a_workdir_that_is_a_file(tmp_path, synthetic_data_dir):
  workdir = tmp_path / 'run'
  workdir.write_text('my notes')
  line = _one_error_line(_train(*_smoke_args(workdir, synthetic_data_dir)))
  assert f'--workdir {workdir} is a file' in line
  assert workdir.read_text() == 'my notes'


def test_a_read_only_workdir(synthetic_data_dir):
  # /sys is read-only even for root, so the check runs as CI does.
  line = _one_error_line(_train(*_smoke_args('/sys', synthetic_data_dir)))
  assert '--workdir /sys is not writable' in line


def test_a_missing_init_from_leaves_no_workdir(tmp_path, synthetic_data_dir):
  workdir = tmp_path / 'run'
  line = _one_error_line(_train(*_smoke_args(
      workdir, synthetic_data_dir, f'--config.init_from={tmp_path / "none"}')))
  assert f'init_from={tmp_path / "none"}' in line
  assert 'No checkpoint' in line
  assert not workdir.exists()


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, synthetic_data_dir):
  """A smoke run of 4 steps with checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp('trained')
  trainer.train_and_evaluate(smoke_config.smoke_config(synthetic_data_dir),
                             workdir)
  return workdir


def test_resuming_with_another_model_names_the_fields_and_the_ways_out(
    trained_workdir, synthetic_data_dir):
  line = _one_error_line(_train(*_smoke_args(
      trained_workdir, synthetic_data_dir, '--config.model.channels=6',
      '--config.total_steps=6')))
  assert 'channels: checkpoint 4, now 6' in line
  assert '--config.model.channels=4' in line
  assert f'--config.init_from={trained_workdir}' in line


def test_a_truncated_newest_checkpoint_resumes_from_the_newest_intact_step(
    tmp_path, synthetic_data_dir, caplog):
  config = smoke_config.smoke_config(synthetic_data_dir)
  trainer.train_and_evaluate(config, tmp_path)
  steps = tmp_path / checkpointing.CHECKPOINTS_SUBDIR
  assert sorted(p.name for p in steps.iterdir() if p.name.isdigit()) == [
      '2', '4']
  # Truncate the largest file of the newest step's parameters.
  files = [p for p in (steps / '4' / 'params').rglob('*') if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:len(largest.read_bytes()) // 3])

  with config.unlocked():
    config.total_steps = 6
  with caplog.at_level('WARNING'):
    result = trainer.train_and_evaluate(config, tmp_path)
  assert result['step'] == 6
  warning = ' '.join(r.getMessage() for r in caplog.records
                     if 'damaged' in r.getMessage())
  assert 'step 4' in warning and 'resumed from step 2' in warning
  assert (steps / '4.corrupt').is_dir()  # set aside, not deleted
  assert '6' in {p.name for p in steps.iterdir()}


def test_no_intact_checkpoint_is_a_clear_error(tmp_path, synthetic_data_dir):
  config = smoke_config.smoke_config(synthetic_data_dir)
  with config.unlocked():
    config.total_steps = 2
  trainer.train_and_evaluate(config, tmp_path)
  steps = tmp_path / checkpointing.CHECKPOINTS_SUBDIR
  for path in (steps / '2' / 'params').rglob('*'):
    if path.is_file():
      path.write_bytes(b'')
  with pytest.raises(train_config.ConfigError, match='can be read'):
    trainer.train_and_evaluate(config, tmp_path)


def test_nan_before_any_checkpoint_says_none_exists_yet(tmp_path,
                                                        synthetic_data_dir):
  config = smoke_config.smoke_config(synthetic_data_dir)
  config.learning_rate = 1e30  # overflows float32 in the next forward pass
  config.lr_decay_factor = 1.0
  config.total_steps = 6
  config.checkpoint_every_steps = 100
  config.eval_every_steps = 100
  with pytest.raises(FloatingPointError) as error:
    trainer.train_and_evaluate(config, tmp_path)
  assert 'No checkpoint had been written yet' in str(error.value)
  assert 'None' not in str(error.value)


def test_train_help_says_where_the_fields_are():
  result = _train('--help')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'dcsfn_jax/training/config.py' in result.stdout


def test_the_readme_prepare_then_train_pair_works_with_tilde_paths(tmp_path):
  """The README's commands as written, `~` and all, with HOME in tmp_path."""
  home = tmp_path / 'home'
  home.mkdir()
  env = {'HOME': str(home)}
  prepare = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.prepare',
       '--dataset=synthetic_rain', '--data_dir=~/tfds', '--max_size=72',
       '--num_train=8', '--num_test=2'],
      capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, **env}, cwd=tmp_path)
  assert prepare.returncode == 0, prepare.stderr[-3000:]
  assert not (tmp_path / '~').exists()
  assert (home / 'tfds').is_dir()
  result = _train(f'--config={_DEMO}:smoke', '--workdir=~/runs/smoke',
                  '--config.data_dir=~/tfds', '--config.prepare_data=False',
                  env=env, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (home / 'runs' / 'smoke' / 'checkpoints').is_dir()
  assert 'remat=auto on CPU: rematerialising' in result.stderr  # its choice
  # Saves between evals carry no metrics by design: no warning for each.
  assert 'tracked_metric' not in result.stderr
  assert not (tmp_path / '~').exists()


def test_a_checkpoint_of_another_version_is_named_not_set_aside(
    tmp_path, synthetic_data_dir):
  """A train state with a field this version does not keep (older runs held
  an RNG key) is refused in one line, and nothing is renamed."""
  config = smoke_config.smoke_config(synthetic_data_dir)
  with config.unlocked():
    config.total_steps = 2
  trainer.train_and_evaluate(config, tmp_path)
  manager = checkpointing.make_manager(tmp_path)
  restored = checkpointing.restore(
      manager, 2, abstract_params=None, abstract_train_state=None)
  manager.close()
  train_state = dict(restored['train_state'], rng=np.zeros(2, np.uint32))
  step_dir = tmp_path / checkpointing.CHECKPOINTS_SUBDIR / '2'
  shutil.rmtree(step_dir)
  manager = checkpointing.make_manager(tmp_path)
  checkpointing.save(manager, 2, params=restored['params'],
                     train_state=train_state,
                     data_state=restored['data_state'],
                     config=restored['config'])
  manager.wait_until_finished()
  manager.close()
  with config.unlocked():
    config.total_steps = 4
  with pytest.raises(train_config.ConfigError, match="another version") as e:
    trainer.train_and_evaluate(config, tmp_path)
  assert "'rng'" in str(e.value) and '--config.init_from=' in str(e.value)
  assert step_dir.is_dir() and not any(
      p.name.endswith('.corrupt') for p in step_dir.parent.iterdir())


def test_init_from_starts_from_the_checkpoint_s_parameters(trained_workdir,
                                                           tmp_path,
                                                           synthetic_data_dir):
  config = smoke_config.smoke_config(synthetic_data_dir)
  with config.unlocked():
    config.init_from = str(trained_workdir)
    config.ema_decay = 0.5  # the average starts from the same parameters
  model = platforms.model_for(config.model, jax.devices())
  optimizer = optax.adam(1e-3)
  abstract = state_lib.abstract_train_state(model, optimizer,
                                            config.patch_size, ema=True)
  init_params = resume.init_params_from(config, abstract['params'])
  manager = checkpointing.make_manager(tmp_path)
  state, data_state = resume.restore_or_init(
      config, tmp_path, manager, model, optimizer,
      parallel.make_mesh(), abstract, init_params)
  manager.close()
  assert data_state is None and int(state['step']) == 0
  expected, _ = checkpointing.load_pretrained(trained_workdir)
  host = state_lib.checkpoint_layout(state)
  for name in ('params', 'ema_params'):
    for got, want in zip(jax.tree.leaves(host[name]),
                         jax.tree.leaves(expected)):
      np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('bad_line', ['not json at all', '[1, 2]',
                                      '{"loss": 1.0}', '[' * 100000])
def test_a_damaged_metrics_file_is_named_in_one_line(
    trained_workdir, tmp_path, synthetic_data_dir, bad_line):
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  metrics_file = workdir / 'metrics.jsonl'
  metrics_file.write_text(metrics_file.read_text() + bad_line + '\n')
  line = _one_error_line(_train(*_smoke_args(workdir, synthetic_data_dir),
                                '--config.total_steps=6'))
  assert f'{metrics_file} line ' in line and 'not a JSON object' in line
  assert metrics_file.read_text().endswith(bad_line + '\n')  # left as it was
