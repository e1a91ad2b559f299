"""python -m dcsfn_jax.aot and its machinery (dcsfn_jax.compilation), fast.

The TPU compiles of the official step are tests/test_aot_tpu_compile.py;
here: HLO parsing, the roofline, the batch search, the targets' one-line
errors, the batch the step is lowered for, and `Runner.lower` against
`Runner.__call__` on the CPU devices.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.compilation import analysis
from dcsfn_jax.compilation import programs
from dcsfn_jax.compilation import report
from dcsfn_jax.compilation import targets
from dcsfn_jax.data import pipeline
from dcsfn_jax.inference import runner as runner_lib
from dcsfn_jax.training import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Optimised HLO as XLA prints it: a tuple all-reduce with an index comment,
# an async collective-permute pair inside a while body of known trip count.
_HLO = """HloModule jit_step

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%fused_computation (p: f32[8,16]) -> f32[8,16] {
  %p = f32[8,16]{1,0} parameter(0)
  ROOT %n = f32[8,16]{1,0} negate(%p)
}

%body (state: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %state = (s32[], f32[8,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %v = f32[8,16]{1,0} get-tuple-element(%state), index=1
  %cp = f32[8,16]{1,0:T(8,128)} collective-permute-start(%v), source_target_pairs={{0,1},{1,0}}
  %cpd = f32[8,16]{1,0} collective-permute-done(%cp)
  %f = f32[8,16]{1,0} fusion(%cpd), kind=kLoop, calls=%fused_computation
  ROOT %t = (s32[], f32[8,16]{1,0}) tuple(%i, %f)
}

%cond (state: (s32[], f32[8,16])) -> pred[] {
  %state = (s32[], f32[8,16]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (a: f32[8,16], b: bf16[4]) -> f32[8,16] {
  %a = f32[8,16]{1,0} parameter(0)
  %b = bf16[4]{0} parameter(1)
  %ar = (f32[8,16]{1,0}, /*index=1*/bf16[4]{0}) all-reduce(%a, %b), to_apply=%add
  %g = f32[8,16]{1,0} get-tuple-element(%ar), index=0
  %z = s32[] constant(0)
  %init = (s32[], f32[8,16]{1,0}) tuple(%z, %g)
  %w = (s32[], f32[8,16]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"16"}}
  %conv = (f32[8,16]{1,0}, u8[0]{0}) custom-call(%a), custom_call_target="__cudnn$convForward"
  ROOT %r = f32[8,16]{1,0} get-tuple-element(%w), index=1
}
"""


def test_shape_bytes_reads_tuples_and_ignores_layouts():
  assert analysis.shape_bytes('(f32[4,8]{1,0:T(8,128)}, /*index=1*/bf16[2])'
                              ) == 4 * 4 * 8 + 2 * 2
  assert analysis.shape_bytes('pred[]') == 1


def test_collectives_count_loop_bodies_once_per_iteration():
  found = analysis.collectives(_HLO)
  assert found['all-reduce'] == {'count': 1, 'bytes': 8 * 16 * 4 + 4 * 2,
                                 'in_loop': 0}
  # One start/done pair in a 16-trip loop: 16 runs, counted by the start.
  assert found['collective-permute'] == {'count': 16,
                                         'bytes': 16 * 8 * 16 * 4,
                                         'in_loop': 16}


def test_kernel_count_counts_fusions_and_library_calls_per_run():
  # Entry: the all-reduce and the cuDNN call; loop body x16: the permute and
  # the fusion. Parameters, tuples, constants and the loop itself are free.
  assert analysis.kernel_count(_HLO) == 2 + 16 * 2


def test_roofline_is_the_slower_of_compute_and_memory():
  assert analysis.roofline_seconds(2e12, 1e9, 1e12, 1e12) == 2.0
  assert analysis.roofline_seconds(1e9, 3e12, 1e12, 1e12) == 3.0
  assert analysis.roofline_seconds(None, 1e9, 1e12, 1e12) is None


def test_batch_search_stops_at_the_first_size_that_does_not_fit():
  per_device = lambda b: 1e9 + 0.3e9 * b
  best, lower_bound, tried = report.largest_batch(per_device, 2,
                                                  per_device(2), 16e9)
  # 2 fits (known), 4 fits, the line through them predicts 50 -> 32 (a power
  # of two times the share), which fits; 64 is predicted not to.
  assert best == 32 and [size for size, _ in tried] == [2, 4, 32]
  assert not lower_bound
  best, lower_bound, tried = report.largest_batch(lambda b: None, 2,
                                                  per_device(2), 16e9)
  assert best == 2 and tried[-1] == (4, None), 'a compile error ends it'
  assert not lower_bound
  best, _, _ = report.largest_batch(per_device, 2, per_device(2), 2e9)
  assert best == 2


def test_a_batch_search_cut_short_by_remat_is_a_lower_bound():
  """As measured for v4-32 in bfloat16: 1 -> 1.14 GB, 2 -> 1.81 GB, 32 -> 7.15
  GB, 128 -> 7.07 GB ('auto' remat turned on between 32 and 128) of 34 GB."""
  measured = {2: 1.81e9, 32: 7.15e9, 128: 7.07e9, 256: 12e9}
  best, lower_bound, tried = report.largest_batch(measured.get, 1, 1.14e9,
                                                  34e9)
  # Memory fell from 32 to 128, so the next size doubles instead of
  # following a line with a negative slope; the third compile still fits.
  assert [size for size, _ in tried] == [1, 2, 32, 128]
  assert best == 128 and lower_bound
  row = {'target': 'v4-32', 'program': 'train', 'dtype': 'bfloat16',
         'status': 'compiled', 'compile_s': 1.0, 'memory': {'total': 1.14e9},
         'device_memory': 34e9, 'largest_per_device': best,
         'largest_is_lower_bound': lower_bound}
  assert '>=128' in report.cells(row)
  best, lower_bound, _ = report.largest_batch(measured.get, 1, 1.14e9, 34e9,
                                              max_compiles=4)
  assert best == 256 and lower_bound


def test_the_augmentations_share_is_compiled_alone_and_taken_out():
  config = config_lib.base_config()
  config.batch_size, config.patch_size = 16, 16
  v5e = targets.get('v5e-8')
  alone, _ = report.compile_program(
      lambda: programs.augmentation(config, jax.devices()[0], 2), v5e)
  assert alone['status'] == 'compiled' and alone['bytes_accessed'] > 0
  row = {'target': 'v5e-8', 'program': 'train', 'status': 'compiled',
         'compile_s': 1.0, 'device_memory': v5e.memory_bytes,
         'dtype': 'float32', 'precision': 'default', 'flops': 1e9,
         'bytes_accessed': alone['bytes_accessed'] + 819e6}
  share = report.augmentation_share(config, v5e, jax.devices(), row)
  assert share['augment_bytes'] == alone['bytes_accessed']
  # What is left is 819 MB at v5e's 819 GB/s.
  assert share['estimate_without_augment_s'] == pytest.approx(1e-3)
  row.update(share, estimate_s=0.5)
  assert '(aug. ' in report.cells(row)[-3]
  assert report.cells(row)[-2] == '~500.00 ms (~1.00 ms w/o aug.)'
  config.augment = 'crop'
  assert report.augmentation_share(config, v5e, jax.devices(), row) == {}


def test_tpu_roofline_peaks_follow_the_precision():
  v5e = targets.get('v5e-8')
  assert v5e.flops_per_second('bfloat16', 'default') == 197e12
  assert v5e.flops_per_second('float32', 'highest') == pytest.approx(
      197e12 / 6)
  v2 = targets.get('v2-8')  # two TensorCores per chip, one device each
  assert v2.devices == 8 and v2.memory_bytes == 8 * 2**30
  h100 = targets.get('H100x8')
  assert h100.flops_per_second('float32', 'default') == 494e12


def test_gpu_target_config_states_the_device():
  text = targets.gpu_target_config(targets.get('h100x8').gpu_facts)
  assert 'core_count: 132' in text
  assert 'cuda_compute_capability { major: 9 minor: 0 }' in text
  assert 'device_description_str: "NVIDIA H100 80GB HBM3"' in text


def test_unknown_target_names_the_known_ones():
  with pytest.raises(targets.TargetError, match='v5e-8, .*h100x8'):
    targets.get('v9-8')


def test_batch_that_does_not_divide_is_the_trainers_error_before_compiling():
  config = config_lib.base_config()
  config.batch_size = 16
  assert report.check_batch(config, targets.get('v5e-8')) is None
  config.batch_size = 12
  problem = report.check_batch(config, targets.get('v5e-8'))
  assert problem.startswith('v5e-8: batch_size=12 is not divisible by the 8 '
                            'devices'), problem
  assert '--config.batch_size=8' in problem
  config.batch_size = 16
  problem = report.check_batch(config, targets.get('v5e-32'))
  assert 'not divisible by the 32 devices' in problem


def test_table_row_of_an_unavailable_target_is_one_line():
  rows = [{'target': 'h100x8', 'program': '-',
           'status': 'unavailable: h100x8: the GPU compiler is not '
                     "installed; pip install -e '.[cuda12]'"}]
  lines = report.table(rows)
  assert len(lines) == 2 and 'unavailable' in lines[1]
  assert '| h100x8 | - | - | unavailable' in report.markdown(rows, 'x')


def test_lowered_batch_is_what_the_pipeline_yields(synthetic_data_dir):
  from dcsfn_jax import data  # pylint: disable=g-import-not-at-top
  source = data.load_split('synthetic_rain', 'train',
                           os.fspath(synthetic_data_dir))
  config = config_lib.base_config()
  config.patch_size = 16
  for augment in ('released', 'crop'):
    config.augment = augment
    batch = next(pipeline.train_iterator(
        source, global_batch_size=4, patch_size=16, augment=augment, seed=0,
        num_threads=1, prefetch_batches=1, cache_mib=0))
    expected = {k: (v.shape, v.dtype) for k, v in batch.items()}
    spec = {k: (v.shape, v.dtype)
            for k, v in programs.batch_spec(config, 4).items()}
    assert spec == expected, augment


def _tiny_model_config():
  model_config = models.preset('official')
  model_config.update(channels=4, num_blocks=1, num_scales=2,
                      convs_per_scale=1)
  return model_config


@pytest.mark.parametrize('shape', [(1, 24, 40), (4, 16, 16)])
def test_runner_lower_compiles_what_call_runs(shape):
  model_config = _tiny_model_config()
  forward = runner_lib.forward_fn(model_config)
  runner = runner_lib.Runner(forward)
  model = platforms.model_for(model_config, jax.local_devices())
  params = models.runtime_layout(
      models.init_params(model, jax.random.key(0), (1, 16, 16, 3)), model)
  images = np.random.default_rng(0).random((*shape, 3), np.float32)
  batch = {'rainy': images if shape[0] == 1 else np.concatenate(
      [images, np.zeros((runner.batch_size - shape[0], *shape[1:], 3),
                        np.float32)])}
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          (params, batch))
  compiled = runner.lower(*abstract).compile()
  params_sharding, batch_sharding = runner._shardings(batch)  # pylint: disable=protected-access
  placed = (jax.device_put(params, params_sharding),
            jax.device_put(batch, batch_sharding))
  with jax.default_matmul_precision(runner_lib.MATMUL_PRECISION):
    lowered_out = np.asarray(compiled(*placed)['derained'])[:shape[0]]
  called_out = runner(params, {'rainy': images})['derained']
  np.testing.assert_array_equal(lowered_out, called_out)


def _run_aot(*flags, env_changes=None):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(env_changes or {})
  return subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.aot', '--config=configs/demo.py',
       *flags], capture_output=True, text=True, timeout=300, cwd=ROOT,
      env=env)


def test_unknown_target_is_one_error_line():
  completed = _run_aot('--target=v5e-8', '--target=tpu-v9')
  assert completed.returncode != 0
  lines = completed.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), completed.stderr
  assert "'tpu-v9' is not a known target" in lines[0]


def test_a_target_without_its_compiler_is_one_row_not_a_traceback(tmp_path):
  # The project's env has no CUDA plugin: the GPU target says what to
  # install, and the command still writes its table.
  if importlib.util.find_spec('jax_cuda12_plugin'):
    pytest.skip('the CUDA plugin is installed here')
  completed = _run_aot('--target=h100x8', f'--output={tmp_path}')
  assert completed.returncode == 0, completed.stderr[-2000:]
  assert 'Traceback' not in completed.stderr
  assert ("h100x8  -  -  unavailable: h100x8: the GPU compiler is not "
          "installed; pip install -e '.[cuda12]'") in completed.stdout
  assert 'ESTIMATES' in completed.stdout
  assert (tmp_path / 'aot.json').exists() and (tmp_path / 'aot.md').exists()
  from dcsfn_jax import aot  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import paths  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileExistsError, match='pass --overwrite'):
    paths.check_text_outputs(os.fspath(tmp_path), False, aot.FILES)
