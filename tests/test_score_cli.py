"""`python -m dcsfn_jax.score` reproduces `evaluate` on its saved PNGs.

A tiny random DCSFN is evaluated on the synthetic test set by the
`evaluate` command; `score` then reads its derained/*.png against the clean
(and rainy) images exported from the same dataset. y_uint8 and y_float
round the output as the PNG does, so they agree image by image; 'official'
scores evaluate's float output, so it differs by exactly the rounding:
official_metrics of the float output is evaluate's figure, official_metrics
of the saved PNG is score's.
"""
import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import data
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax.evaluation import evaluator
from dcsfn_jax import platforms
from dcsfn_jax.images import files as image_files

# Its commands compile the same programs again and again: the first run's are
# reused (conftest.shared_compile_cache).
pytestmark = pytest.mark.usefixtures('shared_compile_cache')

PROTOCOLS = 'official,y_uint8,y_float'


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', *args], capture_output=True,
                        text=True, timeout=timeout, check=False)


def _rows(path):
  with open(path) as file:
    return {row['name']: row for row in csv.DictReader(file)}


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory, synthetic_data_dir):
  """evaluate's report of a tiny model, the exported clean/rainy folders
  and the model itself."""
  model_config = models.preset('official')
  model_config.update(channels=4, num_blocks=1, num_scales=2,
                      convs_per_scale=1, single=True)
  params = platforms.model_for(model_config, jax.devices()).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  root = tmp_path_factory.mktemp('score')
  checkpoint = root / 'pretrained'
  checkpointing.save_pretrained(checkpoint, params, ml_collections.ConfigDict({
      'model': model_config, 'dataset': 'synthetic_rain',
      'data_dir': os.fspath(synthetic_data_dir), 'eval_split': 'test'}))
  result = _run('dcsfn_jax.evaluate', f'--workdir={checkpoint}',
                f'--output={root / "eval"}', f'--protocol={PROTOCOLS}',
                '--nopanels')
  assert result.returncode == 0, result.stderr[-3000:]
  source = data.load_split('synthetic_rain', 'test', synthetic_data_dir)
  examples = [source[i] for i in range(len(source))]
  for example in examples:
    name = image_files.output_name(example['name'])
    for kind in ('clean', 'rainy'):
      os.makedirs(root / kind, exist_ok=True)
      image_files.write_png(root / kind / name, example[kind])
  return {'root': root, 'eval': root / 'eval', 'examples': examples,
          'params': params, 'model_config': model_config}


def test_score_reproduces_evaluate_on_its_saved_pngs(evaluated):
  root = evaluated['root']
  result = _run('dcsfn_jax.score', f'--derained={root / "eval" / "derained"}',
                f'--clean={root / "clean"}', f'--rainy={root / "rainy"}',
                f'--output={root / "score"}', f'--protocol={PROTOCOLS}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| y_float |' in result.stdout
  ours = _rows(root / 'score' / 'per_image.csv')
  theirs = {image_files.output_name(name): row for name, row in
            _rows(root / 'eval' / 'per_image.csv').items()}
  assert sorted(ours) == sorted(theirs) and len(ours) == 2
  same = [f'{p}/{m}' for p in ('y_uint8', 'y_float') for m in ('psnr', 'ssim')]
  # The rainy inputs are the same uint8 images for both, every protocol.
  same += [f'{p}/{m}_rainy' for p in PROTOCOLS.split(',')
           for m in ('psnr', 'ssim')]
  for name, row in ours.items():
    for column in same:
      np.testing.assert_allclose(float(row[column]),
                                 float(theirs[name][column]), atol=1e-4,
                                 err_msg=f'{name} {column}')
  means = {s: json.loads((root / folder / 'summary.json').read_text())['means']
           for s, folder in (('score', 'score'), ('evaluate', 'eval'))}
  for column in same:
    np.testing.assert_allclose(means['score'][column],
                               means['evaluate'][column], atol=1e-4)


def test_official_differs_from_evaluate_by_the_rounding_alone(evaluated):
  """evaluate's 'official' is official_metrics of the float output; the
  saved PNG is that output rounded, and official_metrics of it is what
  score reports."""
  root = evaluated['root']
  result = _run('dcsfn_jax.score', f'--derained={root / "eval" / "derained"}',
                f'--clean={root / "clean"}', f'--output={root / "official"}',
                '--protocol=official')
  assert result.returncode == 0, result.stderr[-3000:]
  scored = _rows(root / 'official' / 'per_image.csv')
  evaluated_rows = _rows(root / 'eval' / 'per_image.csv')
  outputs = []
  evaluator.Evaluator(evaluated['model_config'], protocols=['official']).run(
      models.runtime_layout(evaluated['params'], evaluated['model_config']),
      evaluated['examples'], on_image=outputs.append)
  for output in outputs:
    name = image_files.output_name(output.name)
    png = image_files.read_image(root / 'eval' / 'derained' / name)
    np.testing.assert_array_equal(png, metrics.to_uint8(output.derained))
    clean = metrics.to_float(output.clean)[None]
    float_figures = metrics.official_metrics(jnp.asarray(output.derained[None]),
                                             jnp.asarray(clean))
    png_figures = metrics.official_metrics(
        jnp.asarray(metrics.to_float(png)[None]), jnp.asarray(clean))
    for m in ('psnr', 'ssim'):
      np.testing.assert_allclose(
          float(evaluated_rows[output.name][f'official/{m}']),
          float(float_figures[m][0]), atol=1e-4)
      np.testing.assert_allclose(float(scored[name][f'official/{m}']),
                                 float(png_figures[m][0]), atol=1e-4)
    assert 'official/psnr_rainy' not in scored[name]


def test_without_rainy_inputs_the_report_has_no_baseline(evaluated):
  root = evaluated['root']
  output = root / 'no_baseline'
  result = _run('dcsfn_jax.score', f'--derained={root / "eval" / "derained"}',
                f'--clean={root / "clean"}', f'--output={output}',
                '--protocol=y_uint8', '--dataset=synthetic_rain')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'rainy' not in (output / 'per_image.csv').read_text().splitlines()[0]
  table = (output / 'results.md').read_text()
  assert 'rainy input' not in table and 'synthetic_rain/test' in table
  summary = json.loads((output / 'summary.json').read_text())
  assert summary['rainy_baseline'] is False
  assert summary['matching'] == {'clean': 'identical stems'}
  # Refuses to write over it without --overwrite, with one line.
  again = _run('dcsfn_jax.score', f'--derained={root / "eval" / "derained"}',
               f'--clean={root / "clean"}', f'--output={output}')
  assert again.returncode != 0 and 'Traceback' not in again.stderr
  assert '--overwrite' in again.stderr


def test_errors_are_one_line_and_help_documents_the_matching(tmp_path):
  (tmp_path / 'out').mkdir()
  (tmp_path / 'gt').mkdir()
  for folder, name in (('out', 'a.png'), ('gt', 'b.png')):
    image_files.write_png(tmp_path / folder / name, np.zeros((12, 12, 3),
                                                        np.uint8))
  result = _run('dcsfn_jax.score', f'--derained={tmp_path / "out"}',
                f'--clean={tmp_path / "gt"}', timeout=120)
  assert result.returncode != 0 and 'Traceback' not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if l.startswith('error')]
  assert len(error_lines) == 1
  assert 'a.png' in error_lines[0] and 'b.png' in error_lines[0]
  assert not (tmp_path / 'out_score').exists()

  helped = _run('dcsfn_jax.score', '--help', timeout=120)
  assert helped.returncode == 0
  for text in ('rain-001', 'norain-001', '1_DR', '--crop_border', 'round(v / '
               '257)', 'target/'):
    assert text in helped.stdout, text
