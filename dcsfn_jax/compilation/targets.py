"""The hardware `python -m dcsfn_jax.aot` compiles for, named as users say it.

A target is a TPU slice (v5e-8: 8 chips) or a host of GPUs (h100x8), with the
compile-only devices XLA describes it by and the published figures of one
device that the roofline estimate divides by. Nothing here needs the
hardware: TPU topologies come from libtpu (the tpu extra), GPU ones from the
CUDA plugin (the cuda12 extra) given a `GpuTargetConfigProto` written below
from the device's published specifications.

TPU v2 and v3 chips hold two TensorCores, each one JAX device (v2-8: 4 chips,
8 devices, half a chip's memory each); from v4 on, one chip is one device.
A multi-host slice (v4-32: 4 hosts of 4 chips) is one SPMD program: every
host compiles the same global program, over every device of the slice, and
runs its own devices' share; compiling it once here stands for each host's.
"""
import contextlib
import dataclasses
import importlib.util
import os
import tempfile

import jax
from jax.experimental import topologies

# Published peak dense figures per JAX device: (bf16 flop/s, HBM bytes,
# HBM bytes/s). TPU: Google Cloud TPU system-architecture pages (per chip;
# v2 and v3 halved per TensorCore). GPU: NVIDIA's SXM datasheets.
_TPU_CHIPS = {
    'v2': dict(kind='TPU v2', topology_prefix='v2', flops=46e12,
               memory=16 * 2**30, bandwidth=700e9, cores_per_chip=2),
    'v3': dict(kind='TPU v3', topology_prefix='v3', flops=123e12,
               memory=32 * 2**30, bandwidth=900e9, cores_per_chip=2),
    'v4': dict(kind='TPU v4', topology_prefix='v4', flops=275e12,
               memory=32 * 2**30, bandwidth=1200e9, cores_per_chip=1),
    'v5e': dict(kind='TPU v5e', topology_prefix='v5e', flops=197e12,
                memory=16 * 2**30, bandwidth=819e9, cores_per_chip=1),
    'v5p': dict(kind='TPU v5p', topology_prefix='v5p', flops=459e12,
                memory=95 * 2**30, bandwidth=2765e9, cores_per_chip=1),
    'v6e': dict(kind='TPU v6e', topology_prefix='v6e', flops=918e12,
                memory=32 * 2**30, bandwidth=1640e9, cores_per_chip=1),
}

# GPU facts for the GpuTargetConfigProto (NVIDIA datasheets and the CUDA C
# Programming Guide's table of compute capabilities), plus the peaks.
_GPUS = {
    'a100': dict(description='NVIDIA A100-SXM4-80GB', capability=(8, 0),
                 sms=108, clock_ghz=1.41, memory=80 * 2**30,
                 bandwidth=2039e9, l2=40 * 2**20,
                 shared_per_sm=164 * 1024, shared_optin=163 * 1024,
                 fp32_lanes=64, flops=312e12, tf32_flops=156e12,
                 fp32_flops=19.5e12),
    'h100': dict(description='NVIDIA H100 80GB HBM3', capability=(9, 0),
                 sms=132, clock_ghz=1.98, memory=80 * 2**30,
                 bandwidth=3350e9, l2=50 * 2**20,
                 shared_per_sm=228 * 1024, shared_optin=227 * 1024,
                 fp32_lanes=128, flops=989e12, tf32_flops=494e12,
                 fp32_flops=67e12),
    'h200': dict(description='NVIDIA H200', capability=(9, 0),
                 sms=132, clock_ghz=1.98, memory=141 * 10**9,
                 bandwidth=4800e9, l2=50 * 2**20,
                 shared_per_sm=228 * 1024, shared_optin=227 * 1024,
                 fp32_lanes=128, flops=989e12, tf32_flops=494e12,
                 fp32_flops=67e12),
}
# The cuDNN major.minor the cuda12 extra of the pinned jax installs.
_CUDNN_VERSION = (9, 8)


class TargetError(ValueError):
  """A target that is unknown, or that the installed libraries cannot
  describe; the message is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class Target:
  """A named slice or host.

  Attributes:
    name: as users say it, e.g. 'v5e-8', 'h100x8', '2xh100x8'.
    platform: 'tpu' or 'gpu'.
    kind: the device, e.g. 'TPU v5e', 'NVIDIA H100 80GB HBM3'.
    topology: TPU: libtpu's topology name ('v5e:2x4'); GPU: slices x hosts x
      devices per host ('1x2x8').
    devices: JAX devices (TPU v2/v3: TensorCores).
    hosts: processes the slice runs as.
    peak_flops: published dense bfloat16 flop/s of one device.
    memory_bytes: HBM of one device.
    bandwidth: HBM bytes/s of one device.
    float32_flops: flop/s of one device for float32 convolutions at jax's
      'default' and 'highest' matmul precision.
    gpu_facts: what the GpuTargetConfigProto states (GPU only).
    chips_per_host: TPU: the chips one host holds, as x, y, z bounds.
    chip_config: TPU: libtpu's chip configuration; 'megacore' makes a v4
      chip's two TensorCores one device, as JAX sees them on a v4 VM.
  """
  name: str
  platform: str
  kind: str
  topology: str
  devices: int
  hosts: int
  peak_flops: float
  memory_bytes: int
  bandwidth: float
  float32_flops: dict
  gpu_facts: dict | None = None
  chips_per_host: tuple = (2, 2, 1)
  chip_config: str = 'default'

  def flops_per_second(self, dtype, precision):
    """Published peak flop/s of one device for convolutions in `dtype`
    ('float32'/'bfloat16') at jax matmul `precision` ('default' or
    'highest')."""
    if dtype == 'bfloat16':
      return self.peak_flops
    return self.float32_flops[precision]


def _tpu(name, chip, topology, chips, hosts, chips_per_host=(2, 2, 1)):
  facts = _TPU_CHIPS[chip]
  cores = facts['cores_per_chip']
  chip_config = 'megacore' if chip == 'v4' else 'default'
  per_device = dict(peak_flops=facts['flops'] / cores,
                    memory_bytes=facts['memory'] // cores,
                    bandwidth=facts['bandwidth'] / cores)
  # float32 convolutions: DEFAULT precision runs one bfloat16 pass on the
  # MXU, HIGHEST six.
  return Target(name=name, platform='tpu', kind=facts['kind'],
                topology=f'{facts["topology_prefix"]}:{topology}',
                devices=chips * cores, hosts=hosts,
                chips_per_host=chips_per_host, chip_config=chip_config,
                float32_flops={'default': per_device['peak_flops'],
                               'highest': per_device['peak_flops'] / 6},
                **per_device)


def _gpu(name, gpu, hosts, per_host=8):
  facts = _GPUS[gpu]
  # float32 convolutions: DEFAULT lets cuDNN use TF32 tensor cores,
  # HIGHEST keeps full float32.
  return Target(name=name, platform='gpu', kind=facts['description'],
                topology=f'1x{hosts}x{per_host}', devices=hosts * per_host,
                hosts=hosts, peak_flops=facts['flops'],
                memory_bytes=facts['memory'], bandwidth=facts['bandwidth'],
                float32_flops={'default': facts['tf32_flops'],
                               'highest': facts['fp32_flops']},
                gpu_facts=facts)


TARGETS = {target.name: target for target in (
    _tpu('v2-8', 'v2', '2x2', chips=4, hosts=1),
    _tpu('v3-8', 'v3', '2x2', chips=4, hosts=1),
    _tpu('v4-8', 'v4', '2x2x1', chips=4, hosts=1),
    _tpu('v4-32', 'v4', '2x2x4', chips=16, hosts=4),
    _tpu('v5e-1', 'v5e', '1x1', chips=1, hosts=1, chips_per_host=(1, 1, 1)),
    _tpu('v5e-8', 'v5e', '2x4', chips=8, hosts=1, chips_per_host=(2, 4, 1)),
    _tpu('v5e-32', 'v5e', '4x8', chips=32, hosts=8),
    _tpu('v5p-8', 'v5p', '2x2x1', chips=4, hosts=1),
    _tpu('v6e-8', 'v6e', '2x4', chips=8, hosts=1, chips_per_host=(2, 4, 1)),
    _gpu('a100x8', 'a100', hosts=1),
    _gpu('h100x8', 'h100', hosts=1),
    _gpu('h200x8', 'h200', hosts=1),
    _gpu('2xh100x8', 'h100', hosts=2),
)}

TPU_TARGETS = tuple(n for n, t in TARGETS.items() if t.platform == 'tpu')
GPU_TARGETS = tuple(n for n, t in TARGETS.items() if t.platform == 'gpu')

HELP = ('Hardware to compile for (repeatable): TPU slices '
        f'{", ".join(TPU_TARGETS)} (v2/v3: 2 devices per chip; v4-32 and '
        'v5e-32 span 4 and 8 hosts); GPU hosts '
        f'{", ".join(GPU_TARGETS)} (8 SXM GPUs per host; 2xh100x8 is two '
        'hosts). TPU targets need the tpu extra (libtpu), GPU ones the '
        'cuda12 extra.')


def get(name):
  """The Target called `name`; TargetError listing the known ones."""
  try:
    return TARGETS[name.strip().lower()]
  except KeyError:
    raise TargetError(
        f'--target {name!r} is not a known target; choose from '
        f'{", ".join(TARGETS)}.') from None


# The device_kind JAX reports for each chip, and a target of that chip.
_KIND_TARGETS = {'TPU v2': 'v2-8', 'TPU v3': 'v3-8', 'TPU v4': 'v4-8',
                 'TPU v5 lite': 'v5e-8', 'TPU v5e': 'v5e-8', 'TPU v5': 'v5p-8',
                 'TPU v5p': 'v5p-8', 'TPU v6 lite': 'v6e-8',
                 'TPU v6e': 'v6e-8', 'NVIDIA A100-SXM4-80GB': 'a100x8',
                 'NVIDIA H100 80GB HBM3': 'h100x8', 'NVIDIA H200': 'h200x8'}


def for_device_kind(device_kind):
  """A Target of the chip JAX calls `device_kind` (its published figures),
  or None for a device without them here (a CPU, another GPU)."""
  name = _KIND_TARGETS.get(device_kind)
  return None if name is None else TARGETS[name]


def gpu_target_config(facts) -> str:
  """A stream_executor.GpuTargetConfigProto in text format for one GPU of
  `facts` (a _GPUS entry): the fields XLA's GPU compiler reads to choose
  kernels and fusions."""
  major, minor = facts['capability']
  fields = {
      'threads_per_block_limit': 1024,
      'threads_per_warp': 32,
      'shared_memory_per_block': 48 * 1024,
      'shared_memory_per_core': facts['shared_per_sm'],
      'threads_per_core_limit': 2048,
      'core_count': facts['sms'],
      'fpus_per_core': facts['fp32_lanes'],
      'block_dim_limit_x': 2**31 - 1,
      'block_dim_limit_y': 65535,
      'block_dim_limit_z': 65535,
      'memory_bandwidth': int(facts['bandwidth']),
      'l2_cache_size': facts['l2'],
      'clock_rate_ghz': facts['clock_ghz'],
      'device_memory_size': facts['memory'],
      'shared_memory_per_block_optin': facts['shared_optin'],
      'registers_per_core_limit': 65536,
      'registers_per_block_limit': 65536,
  }
  info = '\n'.join(f'  {key}: {value}' for key, value in fields.items())
  return (f'gpu_device_info {{\n{info}\n'
          f'  cuda_compute_capability {{ major: {major} minor: {minor} }}\n}}\n'
          'platform_name: "CUDA"\n'
          f'dnn_version_info {{ major: {_CUDNN_VERSION[0]} '
          f'minor: {_CUDNN_VERSION[1]} }}\n'
          f'device_description_str: "{facts["description"]}"\n')


@contextlib.contextmanager
def quiet_native_stderr(log_path=None):
  """Sends what native libraries write to file descriptor 2 (libtpu's
  warnings about TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES on a host
  without TPUs) to `log_path` (default: discarded) for the block; Python's
  sys.stderr is left as it is."""
  saved = os.dup(2)
  with (open(log_path, 'ab') if log_path else
        tempfile.TemporaryFile()) as sink:
    os.dup2(sink.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def compile_only_devices(target, log_path=None):
  """The compile-only jax devices of `target`.

  Raises:
    TargetError: one line when the installed libraries cannot describe it
      (its extra missing, or a topology the pinned plugin does not know).
  """
  extra = 'tpu' if target.platform == 'tpu' else 'cuda12'
  module = 'libtpu' if target.platform == 'tpu' else 'jax_cuda12_plugin'
  if importlib.util.find_spec(module) is None:
    raise TargetError(
        f'{target.name}: the {target.platform.upper()} compiler is not '
        f"installed; pip install -e '.[{extra}]'")
  if target.platform == 'tpu':
    # libtpu lets one process per host load it unless told otherwise; a
    # compile-only client touches no chip, so several may run at once.
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  try:
    with quiet_native_stderr(log_path):
      if target.platform == 'tpu':
        topology = topologies.get_topology_desc(
            platform='tpu', topology_name=target.topology,
            chips_per_host_bounds=target.chips_per_host,
            chip_config_name=target.chip_config)
      else:
        os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
        topology = topologies.get_topology_desc(
            platform='cuda', topology_name='', topology=target.topology,
            target_config=gpu_target_config(target.gpu_facts))
  except (RuntimeError, NotImplementedError, ValueError,
          jax.errors.JaxRuntimeError) as error:
    text = ' '.join(str(error).split())
    raise TargetError(f'{target.name}: the installed {extra} libraries '
                      f'cannot describe it ({text[:200]})') from None
  devices = list(topology.devices)
  hosts = len({device.process_index for device in devices})
  if (len(devices), hosts) != (target.devices, target.hosts):
    raise TargetError(f'{target.name}: {target.topology} gave '
                      f'{len(devices)} devices on {hosts} hosts, not '
                      f'{target.devices} on {target.hosts}')
  return devices
