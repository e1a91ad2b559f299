"""The study report: statistics as scipy computes them, the published
figures beside ours, failed runs and unknown spreads, the plots. Runs are
written as the runner leaves them (claims and metrics.jsonl); nothing
trains."""
import csv
import json
import math

from PIL import Image
import pytest
from scipy import stats

from dcsfn_jax import checkpointing
from dcsfn_jax.evaluation import report as evaluation_report
from dcsfn_jax.studies import claims
from dcsfn_jax.studies import plots
from dcsfn_jax.studies import report
from dcsfn_jax.studies import runs
from dcsfn_jax.studies import statistics
import tiny_study

PSNR = {'K=1': [28.1, 28.3, 28.0], 'K=2': [28.6], 'K=3': [28.9, 28.7]}
SSIM = {'K=1': [0.899, 0.901, 0.898], 'K=2': [0.903], 'K=3': [0.905, 0.904]}


def test_spread_equals_scipy_on_fixed_numbers():
  values = [28.1, 28.3, 28.0, 28.45]
  spread = statistics.spread(values)
  low, high = stats.t.interval(0.95, 3, loc=stats.tmean(values),
                               scale=stats.sem(values))
  assert spread.n == 4
  assert spread.mean == pytest.approx(28.2125, abs=1e-12)
  assert spread.std == pytest.approx(stats.tstd(values), abs=1e-12)
  assert (spread.low, spread.high) == pytest.approx((low, high), abs=1e-12)


def test_welch_difference_equals_scipy_on_fixed_numbers():
  a, b = [28.1, 28.3, 28.0], [28.9, 28.7, 28.95, 28.8]
  difference = statistics.difference(a, b)
  result = stats.ttest_ind(a, b, equal_var=False)
  interval = result.confidence_interval(0.95)
  assert difference.difference == pytest.approx(
      sum(a) / 3 - sum(b) / 4, abs=1e-12)
  assert (difference.low, difference.high) == pytest.approx(
      (interval.low, interval.high), abs=1e-12)
  assert difference.p_value == pytest.approx(result.pvalue, abs=1e-12)
  assert difference.resolved is True
  # Overlapping seeds: the interval holds 0, the difference is unresolved.
  assert statistics.difference([1.0, 2.0, 3.0], [1.5, 2.5]).resolved is False


def test_under_two_values_the_spread_is_unknown_never_zero():
  single = statistics.spread([28.5])
  assert (single.n, single.mean, single.std, single.low) == (1, 28.5, None,
                                                             None)
  assert statistics.difference([28.5], [28.1, 28.2]).resolved is None
  assert statistics.spread([]).mean is None


def _finish(workdir, run, state, psnr=None, ssim=None, reason=''):
  """Leaves a run as the runner does: its claim, and for a done run the
  metrics.jsonl its trainer wrote."""
  path = claims.path_of(workdir, run.name)
  path.parent.mkdir(parents=True, exist_ok=True)
  claim = {'state': state, 'holder': {'pid': 1, 'host': 'h', 'task': 0},
           'child_pid': None, 'heartbeat': 0, 'attempts': [
               {'outcome': state, 'seconds': 10.0, 'task': 0}]}
  if state == 'done':
    claim['result'] = {'official/psnr': psnr, 'official/ssim': ssim,
                       'step': 4}
    run_dir = runs.folder(workdir, run)
    run_dir.mkdir(parents=True)
    (run_dir / 'metrics.jsonl').write_text(
        json.dumps({'step': 2, 'train/loss': -0.5}) + '\n' + json.dumps(
            {'step': 4, 'train/loss': -0.6, 'eval/psnr': psnr,
             'eval/ssim': ssim}) + '\n')
  else:
    claim['reason'] = reason
  claims.replace(path, claim)


@pytest.fixture(scope='module')
def table5_report(tmp_path_factory):
  """A K=1..3 study over the paper's Rain100H config whose runs are left
  as the runner leaves them: K=1 three seeds, K=2 one (two never ran), K=3
  two and one diverged."""
  folder = tmp_path_factory.mktemp('table5')
  path = tiny_study.write_study(
      folder, folder / 'no_data', name='table5', seeds=3, reference='K=3',
      base='configs/rain100h.py:paper', axis='ICB scales K',
      variants=[{'name': f'K={k}', 'overrides': {'model.num_scales': k},
                 'published': [f'paper/table5/K={k}']} for k in (1, 2, 3)])
  study = tiny_study.load(path)
  workdir = checkpointing.as_path(folder / 'study')
  workdir.mkdir()
  for variant, values in PSNR.items():
    for seed, (psnr, ssim) in enumerate(zip(values, SSIM[variant])):
      _finish(workdir, runs.Run(variant, seed), 'done', psnr, ssim)
  _finish(workdir, runs.Run('K=3', 2), 'failed',
          reason='Non-finite training loss (nan) at step 3; stopped.')
  content, plot_paths = report.write(study, workdir)
  return study, workdir, content, plot_paths


def test_each_variant_has_its_seeds_spread_and_published_gap(table5_report):
  _, workdir, content, _ = table5_report
  rows = {row['variant']: row for row in content['variants']}
  k1 = rows['K=1']
  assert k1['seeds_finished'] == 3
  assert k1['psnr'] == statistics.spread(PSNR['K=1'])
  assert k1['published'] == {
      'id': 'paper/table5/K=1', 'psnr': 28.34, 'ssim': 0.9006,
      'label': 'dcsfn_paper, Table 5: K=1 ICB scales', 'approximate': False}
  markdown = (workdir / 'study.md').read_text()
  mean = sum(PSNR['K=1']) / 3
  assert (f"| K=1 | official | 3 | {mean:.2f} ± "
          f"{stats.tstd(PSNR['K=1']):.2f} |") in markdown
  assert f'| 28.34 / 0.9006 | {mean - 28.34:+.2f} / ' in markdown


def test_a_failed_run_is_listed_with_its_reason_and_left_out(table5_report):
  _, workdir, content, _ = table5_report
  k3 = next(row for row in content['variants'] if row['variant'] == 'K=3')
  assert (k3['seeds_finished'], k3['seeds_failed']) == (2, 1)
  assert k3['psnr'].mean == pytest.approx(28.8)
  markdown = (workdir / 'study.md').read_text()
  assert '| K=3 | official | 2 (+1 failed) |' in markdown
  assert ('- K=3/seed_2: Non-finite training loss (nan) at step 3; '
          'stopped.') in markdown
  assert '3 failed' not in markdown and '1 failed' in markdown


def test_a_variant_with_one_seed_has_unknown_spread_everywhere(
    table5_report):
  _, workdir, content, _ = table5_report
  markdown = (workdir / 'study.md').read_text()
  assert '| K=2 | official | 1 | 28.60 ± unknown | unknown |' in markdown
  with (workdir / 'study.csv').open() as file:
    k2 = next(row for row in csv.DictReader(file) if row['variant'] == 'K=2')
  assert (k2['psnr_std'], k2['psnr_ci_low'], k2['ssim_std']) == (
      'unknown', 'unknown', 'unknown')
  saved = json.loads((workdir / 'study.json').read_text())
  k2_json = next(row for row in saved['variants'] if row['variant'] == 'K=2')
  assert k2_json['psnr']['std'] == 'unknown'
  comparison = next(c for c in content['comparisons']
                    if c['variant'] == 'K=2')
  assert comparison['psnr'].resolved is None


def test_comparisons_with_the_reference_show_ours_and_the_papers(
    table5_report):
  _, workdir, content, _ = table5_report
  k1 = next(c for c in content['comparisons'] if c['variant'] == 'K=1')
  expected = statistics.difference(PSNR['K=1'], PSNR['K=3'])
  assert k1['psnr'] == expected
  assert k1['published_psnr'] == pytest.approx(28.34 - 28.81)
  markdown = (workdir / 'study.md').read_text()
  assert (f'| K=1 | official | {expected.difference:+.2f} '
          f'[{expected.low:.2f}, {expected.high:.2f}] | '
          f"{'yes' if expected.resolved else 'no'} | -0.47 |") in markdown


def test_plots_open_as_images_of_the_expected_size(table5_report):
  _, workdir, _, plot_paths = table5_report
  names = sorted(path.name for path in plot_paths)
  assert names == ['curves.png', 'lines_official.png', 'summary_official.png']
  sizes = {'summary_official.png': plots.SUMMARY_SIZE,
           'lines_official.png': plots.LINES_SIZE,
           'curves.png': (plots.CURVES_COLUMN_WIDTH * 3, plots.CURVES_HEIGHT)}
  for path in plot_paths:
    with Image.open(path) as image:
      image.load()
      assert (image.format, image.size) == ('PNG', sizes[path.name]), path
      # Drawn on, not blank.
      assert len(image.convert('L').getcolors(1 << 16)) > 8, path


def test_tables_4_to_6_rows_show_for_the_matching_paper_model_only():
  paper = {'channels': 32, 'num_scales': 1, 'convs_per_scale': 1,
           'conv_groups': 4, 'inner_scale_connection': True,
           'recurrent_unit': 'GRU', 'dense_connection': True,
           'skip_connection': True, 'single': False}
  labels = [row['label'] for row in evaluation_report.published_rows(
      'rain100h', 'test', 'official', paper)]
  assert 'K=1 ICB scales' in labels
  assert 'K=3 ICB scales (full model)' not in labels
  official = {**paper, 'channels': 20, 'num_scales': 4, 'convs_per_scale': 4,
              'conv_groups': 1}
  assert not any('Table 5' in row['table'] for row in
                 evaluation_report.published_rows('rain100h', 'test',
                                                  'official', official))
  assert math.isclose(next(
      row['psnr'] for row in evaluation_report.published_rows(
          'rain200h', 'test', 'official', {**official,
                                           'recurrent_unit': 'LSTM'})
      if 'LSTM' in row['label']), 27.93)
