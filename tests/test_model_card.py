"""The model card: `dcsfn_jax.analysis.card` and `python -m dcsfn_jax.summary`."""
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import ml_collections
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import platforms
from dcsfn_jax import pytorch
from dcsfn_jax import models
from dcsfn_jax.analysis import card

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / 'configs' / 'demo.py') + ':smoke'


def _tiny(**changes):
  config = models.preset('official')
  config.channels = 4
  config.num_blocks = 2
  config.num_scales = 2
  config.convs_per_scale = 1
  for field, value in changes.items():
    config[field] = value
  return config


def _summary(*args, cwd=ROOT):
  return subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.summary', *args], cwd=cwd,
      capture_output=True, text=True, timeout=300, check=False)


def _one_error_line(result):
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert 'Traceback' not in result.stderr, result.stderr
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  return lines[0]


def test_official_parameter_counts_from_shapes_only():
  config = models.preset('official')
  counts = card.parameter_counts(card.abstract_params(config))
  for scale in (1, 2, 4):
    assert counts['per_module'][f'encoder_scale{scale}'] == 1_053_120
    assert counts['per_module'][f'decoder_scale{scale}'] == 1_053_120
  released = sum(math.prod(shape) for shape in
                 pytorch.torch_state_dict_shapes(config).values())
  # The released module's 6,453,147 (derain-toolbox's 6.45 M) include
  # 30,600 in convs it owns but never reads in GRU mode: fusion_1_2_2,
  # fusion_2_2_2 and conv_{xr,hz,hr,hn} of rec1_4 and rec2_1.
  assert released == 6_453_147
  assert counts['total'] == 6_422_547
  assert released - counts['total'] == 2 * 820 + 2 * 4 * 3_620


@pytest.mark.parametrize('changes', [{}, {'single': True},
                                     {'recurrent_unit': 'LSTM'},
                                     {'dense_connection': False}])
def test_per_module_counts_sum_to_the_total(changes):
  config = _tiny(**changes)
  counts = card.parameter_counts(card.abstract_params(config))
  assert sum(counts['per_module'].values()) == counts['total']
  params = models.init_params(platforms.model_for(config, jax.devices()),
                              jax.random.key(0))
  assert counts['total'] == sum(leaf.size for leaf in jax.tree.leaves(params))
  # The stacked layout holds padded fusion zeros; the count is per block.
  stacked = models.runtime_layout(params, config)
  assert card.parameter_counts(stacked) == counts


def test_flops_scale_with_pixels_and_count_the_unrolled_graph():
  config = _tiny()
  small = card.forward_cost(config, 32, 32)
  large = card.forward_cost(config, 64, 64)
  assert large['macs'] == 4 * small['macs']
  assert large['mmcv_style'] == 4 * small['mmcv_style']
  # XLA skips taps over zero padding, a smaller share of larger images.
  assert large['flops'] / small['flops'] == pytest.approx(4, rel=0.1)
  assert large['flops'] >= 4 * small['flops']
  # XLA counts a scan's body once: the scanned graph reads less.
  assert small['xla_flops_scanned_graph'] < small['flops']
  assert small['while_loops'] == 0 and small['leaky_relu_outputs'] > 0
  assert small['conv_outputs'] > 0 and small['matmul_macs'] == 0


def test_cli_writes_both_files_and_refuses_to_overwrite(tmp_path):
  output = tmp_path / 'card'
  result = _summary('--config', SMOKE, '--output', str(output),
                    '--batch_size', '2', '--patch_size', '16',
                    '--height', '32', '--width', '32')
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('# DCSFN model card')
  written = json.loads((output / 'model_card.json').read_text())
  parameters = written['parameters']
  assert sum(parameters['per_module'].values()) == parameters['total']
  memory = written['training_memory']
  assert memory['batch_size'] == 2 and memory['patch_size'] == 16
  assert memory['scan_blocks'] and memory['remat'] and memory['temp_bytes'] > 0
  assert written['compute']['height'] == 32
  markdown = (output / 'model_card.md').read_text()
  assert f"**{parameters['total']:,}**" in markdown

  line = _one_error_line(_summary('--config', SMOKE, '--output', str(output),
                                  '--nomemory'))
  assert '--overwrite' in line
  assert (output / 'model_card.md').read_text() == markdown
  result = _summary('--config', SMOKE, '--output', str(output), '--nomemory',
                    '--overwrite')
  assert result.returncode == 0, result.stderr
  assert json.loads((output / 'model_card.json').read_text())[
      'training_memory'] is None


def test_cli_prints_only_without_output(tmp_path):
  result = _summary('--config', SMOKE, '--nomemory', cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert '## Parameters' in result.stdout
  assert not list(tmp_path.iterdir())


def test_cli_reads_a_checkpoint(tmp_path):
  config = _tiny()
  params = models.init_params(platforms.model_for(config, jax.devices()),
                              jax.random.key(0))
  training_config = ml_collections.ConfigDict({'model': config})
  checkpointing.save_pretrained(tmp_path / 'ckpt', params, training_config)
  result = _summary('--workdir', str(tmp_path / 'ckpt'), '--nomemory',
                    '--height', '16', '--width', '16')
  assert result.returncode == 0, result.stderr
  total = sum(leaf.size for leaf in jax.tree.leaves(params))
  assert f'**{total:,}**' in result.stdout


def test_cli_help_and_errors():
  result = _summary('--help')
  assert result.returncode == 0 and '--patch_size' in result.stdout
  line = _one_error_line(_summary('--config', 'configs/no_such_config.py'))
  assert 'configs/' in line
  _one_error_line(_summary())
  _one_error_line(_summary('--workdir', '/nonexistent/dcsfn_card'))


def test_importing_the_command_defines_no_flags():
  code = ('from absl import flags\n'
          'import dcsfn_jax.summary\n'
          "print(sorted(m for m in flags.FLAGS.flags_by_module_dict()\n"
          "             if 'dcsfn_jax' in m))\n")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300, check=True, cwd=ROOT)
  assert result.stdout.strip() == '[]'


def test_overwrite_replaces_only_an_earlier_card(tmp_path):
  from dcsfn_jax import paths  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import summary  # pylint: disable=g-import-not-at-top
  check = lambda output, overwrite: paths.check_text_outputs(
      output, overwrite, summary.FILES)
  (tmp_path / 'model_card.md').write_text('# DCSFN model card\n\nearlier\n')
  check(os.fspath(tmp_path), overwrite=True)
  (tmp_path / 'model_card.json').write_text('{"mine": 1}')
  with pytest.raises(FileExistsError, match='model_card.json exists and was '
                                            'not written by dcsfn_jax'):
    check(os.fspath(tmp_path), overwrite=True)
  with pytest.raises(OSError, match='cannot be created'):
    check(os.fspath(tmp_path / ('x' * 300)), overwrite=False)
