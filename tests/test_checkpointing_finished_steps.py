"""Readers of a workdir that a run is writing (derain, evaluate, init_from)
take the newest *finished* step: not one orbax is still writing, nor one
its keep policy is removing, and they read again once if the step they
chose vanishes under them."""
import shutil

import jax
import numpy as np
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax.training import trainer
import smoke_config

pytestmark = pytest.mark.usefixtures('fast_compiles')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, synthetic_data_dir):
  """A smoke run with checkpoints at steps 2 and 4; step 4 then removed, so
  that step 2 is the newest finished one."""
  workdir = tmp_path_factory.mktemp('run')
  trainer.train_and_evaluate(smoke_config.smoke_config(synthetic_data_dir),
                             workdir)
  shutil.rmtree(workdir / 'checkpoints' / '4')
  return workdir


def _unfinished_steps(steps_dir):
  """Step 6 as orbax leaves it mid-write, and step 8 as a removal leaves it
  (its config item gone first), beside the finished step 2."""
  shutil.copytree(steps_dir / '2',
                  steps_dir / '6.orbax-checkpoint-tmp-1764720000000000')
  being_removed = steps_dir / '8'
  shutil.copytree(steps_dir / '2', being_removed)
  shutil.rmtree(being_removed / 'config')


def test_the_newest_finished_step_is_read(workdir, tmp_path):
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  steps_dir = copy / 'checkpoints'
  _unfinished_steps(steps_dir)
  assert checkpointing.resolve(copy) == str(steps_dir / '2')
  assert checkpointing.resolve(copy, prefer='best') == str(steps_dir / '2')
  params, config = checkpointing.load_pretrained(copy)
  expected, _ = checkpointing.load_pretrained(workdir / 'checkpoints' / '2')
  assert config.model.channels == 4
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(got, want)


def test_a_step_that_vanishes_while_read_is_read_again(workdir, tmp_path,
                                                       monkeypatch):
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  steps_dir = copy / 'checkpoints'
  shutil.copytree(steps_dir / '2', steps_dir / '3')
  real_load = checkpointing._load  # pylint: disable=protected-access
  calls = []

  def removed_on_first_read(directory, weights):
    calls.append(str(directory))
    if len(calls) == 1:  # the run's keep policy removes it now
      shutil.rmtree(directory)
    return real_load(directory, weights)

  monkeypatch.setattr(checkpointing, '_load', removed_on_first_read)
  _, config = checkpointing.load_pretrained(copy)
  assert calls == [str(steps_dir / '3'), str(steps_dir / '2')]
  assert config.model.channels == 4
