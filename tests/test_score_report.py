"""The report beside the published DCSFN figures, and without a baseline."""
import csv
import json

import pytest

from dcsfn_jax import data
from dcsfn_jax import metrics
from dcsfn_jax.evaluation import report


def _summary(dataset=None, split=None, model=None, baseline=True,
             protocols=('official', 'y_uint8', 'y_float')):
  means = {}
  for i, protocol in enumerate(protocols):
    means[f'{protocol}/psnr'] = 30.0 + i
    means[f'{protocol}/ssim'] = 0.9
    if baseline:
      means[f'{protocol}/psnr_rainy'] = 20.0
      means[f'{protocol}/ssim_rainy'] = 0.7
  summary = {'num_images': 3, 'means': means, 'bucket': False,
             'shapes': ['24x32'],
             'protocols': {p: metrics.PROTOCOL_DESCRIPTIONS[p]
                           for p in protocols}}
  if not baseline:
    summary['rainy_baseline'] = False
  if dataset:
    summary.update(dataset=dataset, split=split)
  if model is not None:
    summary['model'] = model
  return summary


def _published_lines(table):
  return [line for line in table.splitlines()
          if line.startswith('| ')
          and (', Table' in line or ', README' in line)]


def test_rain13k_splits_show_promptrestorer_y_figures_with_the_gap():
  table = report.markdown_table(_summary('rain13k', 'test100'), 'x')
  assert ('| y_uint8 | promptrestorer, Table 1: DCSFN trained on Rain13K '
          '(Test100) | 27.46 | 0.887 | +3.54 | +0.013 |') in table
  assert 'Published DCSFN figures for rain13k/test100' in table
  assert len(_published_lines(table)) == 1  # no 'official' row for Test100


def test_rain1200_shows_the_paper_and_the_approximate_toolbox_rows():
  lines = _published_lines(
      report.markdown_table(_summary('rain1200', 'test'), 'x'))
  assert lines == [
      '| official | dcsfn_paper, Table 1: DCSFN (Rain1200) | 33.19 | 0.930 '
      '| -3.19 | -0.030 |',
      '| official ≈ | derain_toolbox, README: DCSFN(GRU), toolbox retrain '
      '(Rain1200) | 31.66 | 0.914 | -1.66 | -0.014 |']


def test_ablation_rows_need_the_matching_model_and_show_no_invented_ssim():
  plain = _published_lines(
      report.markdown_table(_summary('rain100h', 'test'), 'x'))
  assert len(plain) == 1 and 'Table 1' in plain[0]
  full = {'dense_connection': True, 'skip_connection': True, 'single': False}
  m1 = _published_lines(report.markdown_table(
      _summary('rain100h', 'test', {**full, 'skip_connection': False}),
      'x'))
  assert len(m1) == 2
  assert ('| official | dcsfn_paper, Table 3: ablation M1 (no skip '
          'connection) (Rain100H) | 27.86 | 0.898 | +2.14 | +0.002 |') in m1
  m4 = _published_lines(report.markdown_table(
      _summary('rain100h', 'test', full), 'x'))
  assert any('M4' in line and '| 28.81 | 0.904 |' in line for line in m4)


def test_no_published_section_without_a_dataset_or_a_matching_row():
  for summary in (_summary(), _summary('synthetic_rain', 'test'),
                  _summary('rain100h', 'test', protocols=('y_float',))):
    assert 'Published' not in report.markdown_table(summary, 'x')


def test_the_baseline_column_only_with_rainy_inputs():
  with_rainy = report.markdown_table(_summary(), 'x')
  assert 'rainy input PSNR / SSIM' in with_rainy
  assert '| 20.00 / 0.7000 |' in with_rainy
  without = report.markdown_table(_summary(baseline=False), 'x')
  assert 'rainy' not in without
  assert '| official | 30.0000 | 0.9000 | released eval.py' in without


def test_write_report_leaves_the_rainy_columns_out_without_a_baseline(
    tmp_path):
  rows = [{'name': 'a.png', 'height': 24, 'width': 32, 'shape': '24x32',
           'official/psnr': 30.0, 'official/ssim': 0.9,
           'official/psnr_rainy': 100.0, 'official/ssim_rainy': 1.0}]
  summary = _summary(baseline=False, protocols=('official',))
  report.write_report(tmp_path, rows, summary, 'title')
  with open(tmp_path / 'per_image.csv') as file:
    written = list(csv.DictReader(file))
  assert list(written[0]) == ['name', 'height', 'width', 'shape',
                              'official/psnr', 'official/ssim']
  assert json.loads((tmp_path / 'summary.json').read_text())[
      'rainy_baseline'] is False


def test_published_results_file_is_well_formed_and_sourced():
  with open(report.PUBLISHED_RESULTS) as file:
    published = json.load(file)
  for name, source in published['sources'].items():
    assert source['citation'] and source['url'] and source['protocol_basis'], (
        name)
  figures = {}
  for row in published['rows']:
    assert row['source'] in published['sources']
    spec = data.SPECS[row['dataset']]
    assert row['split'] in (set(spec.split_folders) or {'test'}), row
    assert row['protocol'] in metrics.PROTOCOLS + ('niqe',), row
    figures.setdefault(row['source'], []).append(
        (row['published_as'], row.get('psnr'), row.get('ssim'),
         row.get('niqe')))
  assert figures['dcsfn_paper'] == [
      ('Rain100H', 28.81, 0.90, None), ('Rain100L', 38.96, 0.99, None),
      ('Rain1200', 33.19, 0.93, None),
      ('real-world rainy images', None, None, 3.54),
      # Table 3: M1 no skip, M2 no dense, M3 single, M4 full.
      ('Rain100H', 27.86, 0.8979, None), ('Rain100H', 27.78, 0.8898, None),
      ('Rain100H', 26.89, 0.8770, None), ('Rain100H', 28.81, 0.9040, None),
      # Table 4: inner-scale connection without, with.
      ('Rain100H', 28.32, 0.9031, None), ('Rain100H', 28.81, 0.9040, None),
      # Table 5: K = 1, 2, 3, 4.
      ('Rain100H', 28.34, 0.9006, None), ('Rain100H', 28.35, 0.9007, None),
      ('Rain100H', 28.81, 0.9040, None), ('Rain100H', 28.59, 0.9036, None),
      # Table 6: ConvRNN, ConvLSTM, ConvGRU.
      ('Rain100H', 27.63, 0.9001, None), ('Rain100H', 28.43, 0.9017, None),
      ('Rain100H', 28.81, 0.9040, None)]
  assert [(n, p, s) for n, p, s, _ in figures['promptrestorer']] == [
      ('Test100', 27.46, 0.887), ('Rain100H', 28.98, 0.887),
      ('Rain100L', 34.70, 0.961), ('Test2800', 30.96, 0.903),
      ('Test1200', 32.92, 0.937)]
  assert [(n, p, s) for n, p, s, _ in figures['derain_toolbox']] == [
      ('Rain200L', 37.73, 0.983), ('Rain200H', 28.28, 0.895),
      ('Rain800', 26.49, 0.855), ('Rain1200', 31.66, 0.914),
      ('Rain1400', 30.38, 0.912), ('Rain200H', 27.93, 0.897),
      ('Rain200H', 27.39, 0.893)]
  ids = [row['id'] for row in published['rows']]
  assert len(set(ids)) == len(ids), ids
  ablations = [row for row in published['rows']
               if row['table'] in ('Table 3', 'Table 4', 'Table 5',
                                   'Table 6')]
  assert all(row['model_config'] for row in ablations)


@pytest.mark.parametrize('protocol', ['official', 'y_uint8'])
def test_published_rows_filter_by_protocol(protocol):
  rows = report.published_rows('rain13k', 'rain100h', protocol)
  assert [row['psnr'] for row in rows] == (
      [28.98] if protocol == 'y_uint8' else [])
