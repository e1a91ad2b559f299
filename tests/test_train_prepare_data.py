"""prepare_data=True on several hosts: every process ends up able to read
synthetic_rain, including those whose data_dir is node-local.

The processes are simulated: jax.process_index/process_count and the
multihost_utils collectives are replaced, and the gathered rows of the other
processes are scripted. `data.prepare` builds a tiny dataset and is counted.
"""
import jax
import numpy as np
import pytest

from dcsfn_jax import data
from dcsfn_jax.training import inputs
from dcsfn_jax.training import config as train_config

_OTHER_HOST = 1


@pytest.fixture
def builds(monkeypatch):
  """The data_dirs `data.prepare` was called for (a tiny build each)."""
  calls = []

  def tiny_prepare(dataset, data_dir=None):
    assert dataset == 'synthetic_rain'
    calls.append(data_dir)
    data.prepare_synthetic(data_dir, max_size=48, num_train=4, num_test=1)

  monkeypatch.setattr(inputs.data, 'prepare', tiny_prepare)
  return calls


def _simulate(monkeypatch, *, index, count, others, on_sync=lambda: None):
  """This process is `index` of `count`; `others(round, row)` gives the rows
  [lacking data, host] that the gather returns in each round."""
  rounds = []

  def gather(row):
    rounds.append(row)
    return np.asarray(others(len(rounds), np.asarray(row)))

  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: count)
  monkeypatch.setattr(inputs.multihost_utils, 'process_allgather', gather)
  monkeypatch.setattr(inputs.multihost_utils, 'sync_global_devices',
                      lambda name: on_sync())
  return rounds


def _config(data_dir):
  config = train_config.base_config()
  config.dataset = 'synthetic_rain'
  config.prepare_data = True
  config.data_dir = str(data_dir)
  return config


def test_a_process_whose_node_local_data_dir_is_empty_builds_it(
    tmp_path, monkeypatch, builds):
  # Process 1 of 2, alone on its host; process 0 (elsewhere) has the data.
  _simulate(monkeypatch, index=1, count=2,
            others=lambda _, mine: [[0, _OTHER_HOST], mine])
  train_source, eval_source = inputs.load_sources(_config(tmp_path / 'local'))
  assert (len(train_source), len(eval_source)) == (4, 1)
  assert builds == [str(tmp_path / 'local')]


def test_one_process_per_host_builds_a_node_local_data_dir(
    tmp_path, monkeypatch, builds):
  data_dir = tmp_path / 'local'
  # Process 2 of 3 shares its host and data_dir with process 1, which is the
  # first there to lack the data: process 1 builds (done here at the barrier
  # that follows), process 2 waits for it instead of building alongside.
  first_round = True

  def others(round_, mine):
    del round_
    host = mine[1]
    return [[0, _OTHER_HOST], [mine[0], host], mine]

  def sync():
    nonlocal first_round
    if not first_round:
      data.prepare_synthetic(data_dir, max_size=48, num_train=4, num_test=1)
    first_round = False

  rounds = _simulate(monkeypatch, index=2, count=3, others=others,
                     on_sync=sync)
  train_source, _ = inputs.load_sources(_config(data_dir))
  assert len(train_source) == 4
  assert builds == [], 'process 2 built alongside process 1 on its host'
  assert [bool(row[0]) for row in rounds] == [True, False]
