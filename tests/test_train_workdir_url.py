"""A workdir given as a URL (gs://bucket/run) is written as that URL.

No real bucket is used: fake_object_store serves gs:// paths to etils.epath
from a local folder and refuses appends, as GCS does. Orbax's CheckpointManager
and tensorboardX's SummaryWriter are handed a local folder by the test after
it has recorded the URL they were given, since neither writes through epath.
"""
import json
import os
import pathlib

import numpy as np
import orbax.checkpoint as ocp
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax.training import trainer
from dcsfn_jax.training import writer as writer_lib
import fake_object_store
import smoke_config

_URL = 'gs://bucket/run'


pytestmark = pytest.mark.usefixtures('fast_compiles')


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """(local folder behind gs://, URLs given to orbax and tensorboardX)."""
  root = tmp_path / 'bucket_root'
  received = {'checkpoints': [], 'tensorboard': []}
  real_manager = ocp.CheckpointManager
  real_writer = writer_lib.tensorboardX.SummaryWriter

  def manager(directory, **kwargs):
    received['checkpoints'].append(str(directory))
    return real_manager(fake_object_store.local_path(root, directory),
                        **kwargs)

  def writer(logdir, **kwargs):
    received['tensorboard'].append(str(logdir))
    return real_writer(fake_object_store.local_path(root, logdir), **kwargs)

  monkeypatch.setattr(ocp, 'CheckpointManager', manager)
  monkeypatch.setattr(writer_lib.tensorboardX, 'SummaryWriter', writer)
  # A URL mistaken for a relative path would appear here.
  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with fake_object_store.fake_bucket(root):
    yield root, received
  assert not os.listdir(cwd), f'{_URL} was written as a local path: ' + str(
      os.listdir(cwd))


def _lines(root):
  path = fake_object_store.local_path(root, f'{_URL}/metrics.jsonl')
  return [json.loads(line) for line in pathlib.Path(path).read_text()
          .splitlines()]


def test_logger_rewrites_metrics_without_appending_and_resume_keeps_them(
    bucket):
  root, received = bucket
  workdir = checkpointing.as_path(_URL)
  workdir.mkdir(parents=True)
  logger = writer_lib.MetricWriter(workdir, start_step=0)
  for step in (1, 2, 3):
    logger.scalars(step, {'train/loss': -step / 10})
  logger.panels(3, [('rain_01.png', np.zeros((8, 24, 3), np.uint8))])
  logger.close()
  # Resumed from a checkpoint at step 2: step 3 runs again.
  logger = writer_lib.MetricWriter(workdir, start_step=2)
  logger.scalars(3, {'train/loss': -0.35})
  logger.close()
  assert _lines(root) == [{'step': 1, 'train/loss': -0.1},
                          {'step': 2, 'train/loss': -0.2},
                          {'step': 3, 'train/loss': -0.35}]
  panels = pathlib.Path(fake_object_store.local_path(root, f'{_URL}/panels'))
  assert [p.name for p in panels.iterdir()] == ['step0000003_rain_01.png']
  assert received['tensorboard'] == [f'{_URL}/tensorboard'] * 2


def _smoke_config(data_dir):
  config = smoke_config.smoke_config(data_dir)
  config.total_steps = 2
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.eval_max_images = 1
  return config


def test_training_keeps_a_url_workdir(bucket, synthetic_data_dir):
  root, received = bucket
  result = trainer.train_and_evaluate(_smoke_config(synthetic_data_dir), _URL)
  assert result['step'] == 2
  assert received['checkpoints'] == [f'{_URL}/checkpoints']
  assert received['tensorboard'] == [f'{_URL}/tensorboard']
  assert [line['step'] for line in _lines(root)] == [1, 2, 2]
  local = pathlib.Path(fake_object_store.local_path(root, _URL))
  assert sorted(p.name for p in (local / 'checkpoints').iterdir()) == ['2']
  assert len(list((local / 'panels').iterdir())) == 1
