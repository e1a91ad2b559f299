"""The official train step compiles for two TPU generations on this CPU host.

libtpu (pinned in the test extra) compiles the trainer's real step, with the
official preset and Rain100H's recipe at batch 16, for a v5e-8 slice and a
v4-8 slice: the batch splits over the devices, the gradients are averaged
once (all-reduces that carry each distinct gradient once, none inside a loop:
XLA's combiner may cut the one pmean into pieces, two on v5e-8), no
collective-permute is left inside the block scan, and the step fits the
chip's memory. Each compile takes minutes on a
CPU host (benchmarks/RESULTS.md).
"""
import importlib.util
import math
import pathlib

import jax

import pytest

from dcsfn_jax.compilation import analysis
from dcsfn_jax.compilation import programs
from dcsfn_jax.compilation import targets

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _official_config():
  spec = importlib.util.spec_from_file_location(
      'rain100h', ROOT / 'configs' / 'rain100h.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.batch_size = 16
  return config


@pytest.mark.slow
@pytest.mark.parametrize('target_name', ['v5e-8', 'v4-8'])
def test_official_train_step_compiles_for_tpu(target_name):
  assert importlib.util.find_spec('libtpu') is not None, (
      "libtpu is missing: pip install -e '.[test]' installs it")
  target = targets.get(target_name)
  devices = targets.compile_only_devices(target)
  program = programs.train_step(_official_config(), devices)
  with targets.quiet_native_stderr():
    compiled = program.lowered.compile()
  hlo = compiled.as_text()
  found = analysis.collectives(hlo)
  params = program.lowered.args_info[0][0]['params']
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  # The GRU cells with a hidden state add conv_xK(x) + conv_hK(h) (K = z, r,
  # n), so the two biases of each pair get one and the same gradient, which
  # XLA computes and reduces once: 12 bias vectors of the official preset.
  shared = [path for path, _ in leaves
            if 'conv_h' in jax.tree_util.keystr(path)
            and jax.tree_util.keystr(path).endswith("['bias']")]
  assert len(shared) == 12, shared
  gradient_bytes = sum(
      math.prod(leaf.shape) * leaf.dtype.itemsize for path, leaf in leaves
      if path not in shared)
  # The distinct gradients and the loss's few scalars, averaged once.
  assert (gradient_bytes <= found['all-reduce']['bytes']
          <= gradient_bytes + 1024), (gradient_bytes, found)
  assert found['all-reduce']['count'] <= 2, found
  assert found['all-reduce']['in_loop'] == 0, found
  assert 'collective-permute' not in found, found
  memory = analysis.memory(compiled)
  assert 0 < memory['total'] <= target.memory_bytes, memory
  cost = analysis.cost(compiled)
  assert cost['flops'] and cost['bytes_accessed'], cost
