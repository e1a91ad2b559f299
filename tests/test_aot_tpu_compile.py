"""The official train step compiles for two TPU generations on this CPU host.

libtpu (pinned in the test extra) compiles the trainer's real step, with the
official preset and Rain100H's recipe at batch 16, for a v5e-8 slice and a
v4-8 slice: the batch splits over the devices, the gradients are averaged
once (all-reduces that carry each gradient once, none inside a loop: XLA:TPU's
combiner may cut the one pmean into pieces, two on v5e-8), no
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
  gradient_bytes = sum(
      math.prod(leaf.shape) * leaf.dtype.itemsize
      for leaf in jax.tree.leaves(program.lowered.args_info[0][0]['params']))
  # The gradients and the loss's few scalars, averaged once.
  assert (gradient_bytes <= found['all-reduce']['bytes']
          <= gradient_bytes + 1024), (gradient_bytes, found)
  assert found['all-reduce']['count'] <= 2, found
  assert found['all-reduce']['in_loop'] == 0, found
  assert 'collective-permute' not in found, found
  memory = analysis.memory(compiled)
  assert 0 < memory['total'] <= target.memory_bytes, memory
  cost = analysis.cost(compiled)
  assert cost['flops'] and cost['bytes_accessed'], cost
