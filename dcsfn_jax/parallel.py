"""Mesh, shardings and host-to-device transfer for data-parallel training.

One mesh axis, 'data', spans every device of every process. The train state
is replicated (PartitionSpec()), batches are split along their leading axis.
"""
import glob
import importlib.util
import os

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

DATA_AXIS = 'data'

# Variables read when no explicit coordinator/process arguments are given.
_ENV_COORDINATOR = 'JAX_COORDINATOR_ADDRESS'
_ENV_NUM_PROCESSES = 'JAX_NUM_PROCESSES'
_ENV_PROCESS_ID = 'JAX_PROCESS_ID'


def _int_or_none(value, name):
  if value is None or value == '':
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name} must be an integer, got {value!r}.') from None


def _launched_by_cluster():
  """True under a multi-process SLURM/Open MPI launch or on a Cloud TPU VM."""
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    return True
  if int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return True
  # The same device files JAX looks for to recognise a Cloud TPU VM; there
  # initialize() works for one host as well as for a pod slice.
  return bool(glob.glob('/dev/accel[0-9]*') or glob.glob('/dev/vfio/[0-9]*'))


def initialize_distributed(coordinator_address=None, num_processes=None,
                           process_id=None):
  """Joins a multi-process run by calling `jax.distributed.initialize`.

  Arguments win over the variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
  and JAX_PROCESS_ID. With none of them set, SLURM (SLURM_NTASKS > 1), Open MPI
  and Cloud TPU VMs are detected and left to JAX's own auto-detection. A plain
  single-process run does nothing. Must run before any other JAX call.

  Returns:
    True if `jax.distributed.initialize` was called.
  """
  coordinator_address = (coordinator_address
                         or os.environ.get(_ENV_COORDINATOR) or None)
  num_processes = _int_or_none(
      num_processes if num_processes is not None
      else os.environ.get(_ENV_NUM_PROCESSES), 'num_processes')
  process_id = _int_or_none(
      process_id if process_id is not None
      else os.environ.get(_ENV_PROCESS_ID), 'process_id')

  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError(
          'A multi-process launch needs all three of coordinator address, '
          'number of processes and process id (flags --coordinator_address, '
          f'--num_processes, --process_id or ${_ENV_COORDINATOR}, '
          f'${_ENV_NUM_PROCESSES}, ${_ENV_PROCESS_ID}); got '
          f'coordinator_address={coordinator_address!r}, '
          f'num_processes={num_processes!r}, process_id={process_id!r}.')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'process_id={process_id} is outside '
                       f'[0, num_processes={num_processes}).')
    if num_processes == 1:
      return False
    logging.info('Joining %d processes at %s as process %d.', num_processes,
                 coordinator_address, process_id)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
    return True
  if _launched_by_cluster():
    jax.distributed.initialize()
    return True
  return False


def host_has_devices(platform):
  """Whether this host shows devices of `platform` ('tpu', 'cuda', 'rocm' or
  'gpu') on its buses, by JAX's own probes (TPU chips on PCI, an NVIDIA GPU,
  an AMD GPU), without starting a backend."""
  # pylint: disable=g-import-not-at-top
  from jax._src import hardware_utils
  if platform == 'tpu':
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  if platform in ('cuda', 'gpu') and hardware_utils.has_visible_nvidia_gpu():
    return True
  return (platform in ('rocm', 'gpu')
          and hardware_utils.num_available_amd_gpus(1) > 0)


def skip_absent_tpu():
  """Keeps JAX from trying its TPU backend on a host without TPU chips.

  With libtpu installed (the tpu or test extra), every JAX process first
  tries a TPU client: it loads libtpu (about 0.2 s), takes
  /tmp/libtpu_lockfile and scans the other processes' open files, then
  falls back to the CPU quietly. Where the PCI bus shows no TPU chip (JAX's
  own test) and $JAX_PLATFORMS chooses nothing, the attempt is dropped.
  Compiling for a TPU topology (`dcsfn_jax.compilation`) loads libtpu by
  itself and is unaffected. Call before anything initialises JAX's backends.

  Returns:
    True if the TPU backend was dropped.
  """
  if (os.environ.get('JAX_PLATFORMS')
      or importlib.util.find_spec('libtpu') is None):
    return False
  # pylint: disable=g-import-not-at-top,protected-access
  from jax._src import xla_bridge
  if host_has_devices('tpu'):
    return False
  return xla_bridge._backend_factories.pop('tpu', None) is not None


_HOST_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


def use_host_cores(batch_size=None):
  """Gives XLA's CPU backend one device per core, so data parallelism on a CPU
  host uses every core.

  One XLA CPU device keeps about one core busy; one device per core splits
  each batch across them (1.1-1.5x on 2 cores, benchmarks/RESULTS.md). Adds
  --xla_force_host_platform_device_count to XLA_FLAGS unless it is there
  already (set it yourself to choose, e.g. =1). Only the CPU backend reads
  it: on a GPU or TPU host the accelerators stay the devices. Call it before
  anything initialises JAX's backends, i.e. first thing in a command's main.

  Args:
    batch_size: if given, the count is the largest divisor of it that is at
      most the number of cores, so the batch splits evenly.

  Returns:
    The device count set, or None if XLA_FLAGS already had one.
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if _HOST_DEVICE_COUNT_FLAG in xla_flags:
    return None
  cores = len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else (os.cpu_count() or 1)
  count = max(1, cores)
  if batch_size:
    count = max(d for d in range(1, min(count, batch_size) + 1)
                if batch_size % d == 0)
  os.environ['XLA_FLAGS'] = f'{xla_flags} {_HOST_DEVICE_COUNT_FLAG}={count}'.strip()
  return count


def make_mesh(devices=None):
  """A 1-D mesh with axis 'data' over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh):
  """The sharding of a value held whole on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
  """The sharding of a batch split along its leading axis over 'data'."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def height_sharded(mesh):
  """The sharding of [B, H, ...] images split along their rows over 'data'.

  XLA partitions the convolutions (exchanging the rows at the seams), so the
  result is that of the whole image: one image's latency gains from every
  device.
  """
  return NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))


def replicate(tree, mesh):
  """Places every leaf of `tree` whole on every device of `mesh`.

  Every process must pass the same values.
  """
  sharding = replicated(mesh)

  def place(leaf):
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
      return leaf
    if jax.process_count() == 1:
      return jax.device_put(leaf, sharding)
    # Multi-process: each process supplies the (identical) full value for its
    # own devices.
    leaf = np.asarray(leaf)
    return jax.make_array_from_process_local_data(sharding, leaf, leaf.shape)

  return jax.tree.map(place, tree)


def shard_batch(host_batch, mesh):
  """Turns this process's share of a global batch into global jax.Arrays.

  Args:
    host_batch: dict (any pytree) of numpy arrays [B_local, ...]; B_local is
      the global batch divided by the process count.
    mesh: from `make_mesh`.

  Returns:
    The same pytree of jax.Arrays [B_global, ...] sharded along 'data'.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      host_batch)
