"""`python -m dcsfn_jax.evaluate` end to end on the synthetic test set: the
files a user looks at, and refusals with a message that says what to do."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dcsfn_jax.evaluation import evaluator
from dcsfn_jax.images import files as image_files

# Its commands compile the same programs again and again: the first run's are
# reused (conftest.shared_compile_cache).
pytestmark = pytest.mark.usefixtures('shared_compile_cache')


def test_cli_writes_tables_images_and_panels(checkpoint_dir, tmp_path):
  output = tmp_path / 'report'
  result = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.evaluate',
       f'--workdir={checkpoint_dir}', f'--output={output}'],
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| official |' in result.stdout and '| y_uint8 |' in result.stdout

  with open(output / 'per_image.csv') as file:
    rows = list(csv.DictReader(file))
  summary = json.loads((output / 'summary.json').read_text())
  assert len(rows) == summary['num_images'] == 2
  assert summary['dataset'] == 'synthetic_rain' and summary['split'] == 'test'
  for column in ('official/psnr', 'official/ssim', 'y_uint8/psnr',
                 'y_uint8/ssim', 'official/psnr_rainy', 'y_uint8/ssim_rainy'):
    np.testing.assert_allclose(
        summary['means'][column],
        np.mean([float(row[column]) for row in rows]), atol=1e-5)
  table = (output / 'results.md').read_text()
  for protocol in ('official', 'y_uint8'):
    assert f'| {protocol} | {summary["means"][protocol + "/psnr"]:.4f}' in table

  for row in rows:
    name = image_files.output_name(row['name'])
    derained = image_files.read_image(output / 'derained' / name)
    assert derained.shape == (int(row['height']), int(row['width']), 3)
    panel = image_files.read_image(output / 'panels' / name)
    assert panel.shape[1] == 4 * int(row['width']) + 3 * 4
    assert panel.shape[0] > int(row['height'])


def test_evaluate_checkpoint_refuses_to_overwrite_and_names_bad_protocols(
    checkpoint_dir, tmp_path):
  (tmp_path / 'old.txt').write_text('keep me')
  with pytest.raises(FileExistsError, match='--overwrite'):
    evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=tmp_path)
  with pytest.raises(ValueError, match="'official', 'y_uint8'"):
    evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=tmp_path / 'new',
                                 protocols=['psnr_rgb'])
  assert (tmp_path / 'old.txt').read_text() == 'keep me'


def test_evaluate_checkpoint_only_official_with_limit(checkpoint_dir,
                                                      tmp_path):
  summary = evaluator.evaluate_checkpoint(
      checkpoint_dir, output_dir=tmp_path / 'one', protocols=['official'],
      limit=1, panels=False, progress=False)
  assert summary['num_images'] == 1
  assert set(summary['means']) == {'official/psnr', 'official/ssim',
                                   'official/psnr_rainy',
                                   'official/ssim_rainy'}
  assert not (tmp_path / 'one' / 'panels').exists()
  assert len(os.listdir(tmp_path / 'one' / 'derained')) == 1


def test_cli_reports_a_missing_checkpoint_without_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.evaluate',
       f'--workdir={tmp_path / "nothing"}'],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert 'nothing' in result.stderr and 'Traceback' not in result.stderr


def test_the_per_image_table_of_a_large_set_shows_its_extremes():
  from dcsfn_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  rows = [{'name': f'image_{n:02d}', 'official/psnr': 30 - (n * 7) % 25,
           'official/ssim': 0.9, 'official/psnr_rainy': 20.0,
           'official/ssim_rainy': 0.7} for n in range(25)]
  summary = {'protocols': {'official': 'the released eval.py'},
             'rainy_baseline': True}
  table = report.per_image_table(rows, summary, 'out/per_image.csv')
  assert 'the 5 lowest and 5 highest official PSNR of 25 (all in ' \
         'out/per_image.csv)' in table[1]
  shown = [line.split(' | ')[1] for line in table[5:]
           if not line.startswith('| ...')]
  ranked = sorted(rows, key=lambda row: row['official/psnr'])
  assert shown == [f"{row['official/psnr']:.2f} / 0.9000"
                   for row in ranked[:5] + ranked[-5:]]
  assert '| ... 15 more |' in table[10]
  summary['rainy_baseline'] = False
  table = report.per_image_table(rows[:20], summary)
  assert table[1] == 'Per image (20):' and len(table) == 5 + 20
  assert 'rainy' not in table[3]
