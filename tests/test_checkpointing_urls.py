"""Checkpoint directories given as URLs (gs://) stay URLs; local paths are
made absolute. No real bucket is used: see fake_object_store."""
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import models
import fake_object_store

_URL = 'gs://bucket/run'


def _config():
  model = models.preset('official')
  model.update(channels=4, num_blocks=1, num_scales=1, single=True)
  return ml_collections.ConfigDict({'model': model})


def _params():
  return {'convert': {'kernel': jnp.ones((3, 3, 3, 4), jnp.float32),
                      'bias': np.arange(4, dtype=np.float32)}}


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path,
                                                           monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(checkpointing.as_path(_URL)) == _URL
  assert str(checkpointing.as_path('run')) == os.path.join(tmp_path, 'run')


def test_orbax_receives_the_url_unchanged(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  received = []

  class RecordingManager:
    def __init__(self, directory, **unused_kwargs):
      received.append(str(directory))

  class RecordingCheckpointer:
    def __init__(self, *unused_args):
      pass

    def __enter__(self):
      return self

    def __exit__(self, *unused_args):
      return False

    def save(self, directory, **unused_kwargs):
      received.append(str(directory))

  monkeypatch.setattr(ocp, 'CheckpointManager', RecordingManager)
  monkeypatch.setattr(ocp, 'Checkpointer', RecordingCheckpointer)
  checkpointing.make_manager(_URL)
  checkpointing.save_pretrained(f'{_URL}/pretrained', _params(), _config())
  assert received == [f'{_URL}/checkpoints', f'{_URL}/pretrained']
  assert not os.listdir(tmp_path), 'a URL was turned into a local folder'


def test_resolve_finds_checkpoints_behind_a_url(tmp_path):
  bucket = tmp_path / 'bucket_root'
  pretrained = fake_object_store.local_path(bucket, f'{_URL}/pretrained')
  checkpointing.save_pretrained(pretrained, _params(), _config())
  with fake_object_store.fake_bucket(bucket):
    assert checkpointing.resolve(f'{_URL}/pretrained') == f'{_URL}/pretrained'
    with pytest.raises(FileNotFoundError, match=f'{_URL}/missing'):
      checkpointing.resolve(f'{_URL}/missing')
