"""Mesh, batch sharding, replication, host devices and the multi-process
switch."""
import os
import subprocess
import sys

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


@pytest.mark.parametrize('cores, batch_size, expected', [
    (2, None, 2), (2, 16, 2), (6, 16, 4), (8, 12, 6), (4, 3, 3), (3, 4, 2),
    (1, 16, 1)])
def test_use_host_cores_picks_a_count_that_splits_the_batch(
    monkeypatch, cores, batch_size, expected):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setattr(parallel.os, 'sched_getaffinity',
                      lambda _: set(range(cores)))
  assert parallel.use_host_cores(batch_size) == expected
  assert parallel.os.environ['XLA_FLAGS'] == (
      f'--xla_force_host_platform_device_count={expected}')


def test_use_host_cores_keeps_a_count_the_user_set(monkeypatch):
  flags = '--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=1'
  monkeypatch.setenv('XLA_FLAGS', flags)
  assert parallel.use_host_cores(16) is None
  assert parallel.os.environ['XLA_FLAGS'] == flags


def test_use_host_cores_keeps_other_xla_flags(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_dump_to=/tmp/dump')
  monkeypatch.setattr(parallel.os, 'sched_getaffinity', lambda _: {0, 1})
  assert parallel.use_host_cores(4) == 2
  assert parallel.os.environ['XLA_FLAGS'] == (
      '--xla_dump_to=/tmp/dump --xla_force_host_platform_device_count=2')


def test_use_host_cores_before_jax_starts_sets_the_device_count():
  """In a fresh process, as the commands' main() calls it."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  script = ('import jax; from dcsfn_jax import parallel; '
            'parallel.use_host_cores(64); print(jax.device_count())')
  out = subprocess.run([sys.executable, '-c', script], env=env, check=True,
                       capture_output=True, text=True).stdout
  cores = len(os.sched_getaffinity(0))
  assert int(out) == max(d for d in range(1, cores + 1) if 64 % d == 0)
