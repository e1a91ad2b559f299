"""Mesh, batch sharding, replication and the multi-process switch."""
import jax
import numpy as np
import pytest

from dcsfn_jax import parallel


def test_mesh_spans_every_device():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ('data',)
  assert mesh.devices.size == jax.device_count()


def test_shard_batch_splits_the_leading_axis():
  mesh = parallel.make_mesh()
  n = jax.device_count()
  batch = {'rainy': np.arange(n * 2 * 3, dtype=np.float32).reshape(n * 2, 3)}
  sharded = parallel.shard_batch(batch, mesh)['rainy']
  assert sharded.shape == (n * 2, 3)
  np.testing.assert_array_equal(np.asarray(sharded), batch['rainy'])
  shard_rows = sorted(s.data.shape[0] for s in sharded.addressable_shards)
  assert shard_rows == [2] * n


def test_replicate_puts_a_whole_copy_on_each_device():
  mesh = parallel.make_mesh()
  tree = parallel.replicate({'w': np.ones((2, 2), np.float32)}, mesh)
  assert tree['w'].sharding.is_fully_replicated
  assert len(tree['w'].addressable_shards) == jax.device_count()


def test_single_process_does_not_initialize(monkeypatch):
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
               'JAX_PROCESS_ID', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(parallel, '_launched_by_cluster', lambda: False)
  assert parallel.initialize_distributed() is False
  assert parallel.initialize_distributed('localhost:1234', 1, 0) is False


def test_partial_launch_settings_are_a_clear_error(monkeypatch):
  monkeypatch.delenv('JAX_PROCESS_ID', raising=False)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'localhost:1234')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  with pytest.raises(ValueError, match='process_id=None'):
    parallel.initialize_distributed()
  with pytest.raises(ValueError, match='outside'):
    parallel.initialize_distributed(process_id=5)
