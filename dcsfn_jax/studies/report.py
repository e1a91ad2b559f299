"""What a study leaves for people: WORKDIR/study.md, study.csv, study.json
and the charts in WORKDIR/plots/.

Per variant and protocol: the seeds finished, mean, standard deviation and
95% interval of PSNR and SSIM, the published figure and our gap to it. Per
comparison the paper draws (each variant against the reference, the full
model): our difference of means with its Welch interval, whether the seeds
resolve it (the interval excludes 0), and the paper's difference. Failed
runs are listed with their reason and left out of the means; a variant with
under 2 finished seeds has its spread written 'unknown'.
"""
import csv
import io
import json
import os

from dcsfn_jax.evaluation import report as evaluation_report
from dcsfn_jax.studies import plots
from dcsfn_jax.studies import runs as runs_lib
from dcsfn_jax.studies import statistics
from dcsfn_jax.training import writer

FILES = ('study.md', 'study.csv', 'study.json')
PLOTS = 'plots'
UNKNOWN = 'unknown'
_DIGITS = {'psnr': 2, 'ssim': 4}


def published_rows():
  """{row id: row} of dcsfn_jax/assets/published_results.json, each with
  its source's record under 'source_info'."""
  with open(evaluation_report.PUBLISHED_RESULTS) as file:
    published = json.load(file)
  return {row['id']: {**row, 'source_info': published['sources'][
      row['source']]} for row in published['rows']}


def _published_for(variant, protocol, rows):
  """{'psnr', 'ssim', 'label', 'approximate'} of the variant's first
  published row measured under `protocol`; {} when none."""
  for row_id in variant.published:
    row = rows[row_id]
    if row['protocol'] == protocol:
      return {'id': row_id, 'psnr': row.get('psnr'), 'ssim': row.get('ssim'),
              'label': f"{row['source']}, {row['table']}: {row['label']}",
              'approximate': bool(row.get('approximate_protocol'))}
  return {}


def collect(study, workdir):
  """The report's content as plain data (what study.json holds)."""
  rows = published_rows()
  statuses = {run: runs_lib.status(workdir, run)
              for run in runs_lib.all_runs(study)}
  run_rows = []
  for run, status in statuses.items():
    run_rows.append({'run': run.name, 'variant': run.variant,
                     'seed': run.seed, 'state': status.state,
                     'reason': status.reason,
                     'figures': status.result if status.state == 'done'
                     else None,
                     'folder': os.fspath(runs_lib.folder(workdir, run))})
  variant_rows = []
  for variant in study.variants:
    finished = [r for r in run_rows
                if r['variant'] == variant.name and r['state'] == 'done']
    failed = [r for r in run_rows
              if r['variant'] == variant.name and r['state'] == 'failed']
    for protocol in study.protocols:
      values = {metric: [r['figures'][f'{protocol}/{metric}']
                         for r in finished
                         if f'{protocol}/{metric}' in r['figures']]
                for metric in ('psnr', 'ssim')}
      published = _published_for(variant, protocol, rows)
      row = {'variant': variant.name, 'protocol': protocol,
             'seeds_finished': len(values['psnr']),
             'seeds_failed': len(failed), 'values': values,
             'published': published}
      for metric in ('psnr', 'ssim'):
        row[metric] = statistics.spread(values[metric])
      variant_rows.append(row)
  comparisons = _comparisons(study, variant_rows)
  return {'study': study.name, 'title': study.title, 'file': study.path,
          'seeds': list(study.seeds), 'protocols': list(study.protocols),
          'reference': study.reference, 'overrides':
          list(study.command_overrides), 'runs': run_rows,
          'variants': variant_rows, 'comparisons': comparisons}


def _comparisons(study, variant_rows):
  if not study.reference:
    return []
  found = []
  for protocol in study.protocols:
    by_name = {row['variant']: row for row in variant_rows
               if row['protocol'] == protocol}
    reference = by_name[study.reference]
    for variant in study.variants:
      if variant.name == study.reference:
        continue
      row = by_name[variant.name]
      entry = {'variant': variant.name, 'reference': study.reference,
               'protocol': protocol}
      for metric in ('psnr', 'ssim'):
        entry[metric] = statistics.difference(row['values'][metric],
                                              reference['values'][metric])
        ours, theirs = (row['published'].get(metric),
                        reference['published'].get(metric))
        entry[f'published_{metric}'] = (
            None if ours is None or theirs is None else ours - theirs)
      found.append(entry)
  return found


def _number(value, metric):
  return '–' if value is None else f'{value:.{_DIGITS[metric]}f}'


def _mean_std(spread, metric):
  if spread.mean is None:
    return '–'
  std = UNKNOWN if spread.std is None else _number(spread.std, metric)
  return f'{_number(spread.mean, metric)} ± {std}'


def _interval(low, high, metric):
  if low is None:
    return UNKNOWN
  return f'[{_number(low, metric)}, {_number(high, metric)}]'


def _signed(value, metric):
  return '–' if value is None else f'{value:+.{_DIGITS[metric]}f}'


def _resolved(difference):
  if difference is None or difference.resolved is None:
    return UNKNOWN
  return 'yes' if difference.resolved else 'no'


def variant_table(content):
  """Markdown lines: one row per variant and protocol."""
  lines = ['| variant | protocol | seeds | PSNR (dB) mean ± std | PSNR 95% CI '
           '| SSIM mean ± std | SSIM 95% CI | published PSNR / SSIM '
           '| ours − published |',
           '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |']
  for row in content['variants']:
    published = row['published']
    if published:
      mark = ' ≈' if published['approximate'] else ''
      shown = (f"{_number(published['psnr'], 'psnr')} / "
               f"{_number(published['ssim'], 'ssim')}{mark}")
      gaps = ' / '.join(
          _signed(None if published[m] is None or row[m].mean is None
                  else row[m].mean - published[m], m)
          for m in ('psnr', 'ssim'))
    else:
      shown = gaps = '–'
    seeds = f"{row['seeds_finished']}"
    if row['seeds_failed']:
      seeds += f" (+{row['seeds_failed']} failed)"
    lines.append(
        f"| {row['variant']} | {row['protocol']} | {seeds} "
        f"| {_mean_std(row['psnr'], 'psnr')} "
        f"| {_interval(row['psnr'].low, row['psnr'].high, 'psnr')} "
        f"| {_mean_std(row['ssim'], 'ssim')} "
        f"| {_interval(row['ssim'].low, row['ssim'].high, 'ssim')} "
        f'| {shown} | {gaps} |')
  return lines


def comparison_table(content):
  """Markdown lines: each variant minus the reference, ours and the
  paper's; [] without a reference."""
  if not content['comparisons']:
    return []
  lines = [f"Against {content['reference']} (the reference): difference of "
           'means with its 95% CI (Welch); resolved = the interval excludes '
           '0.', '',
           '| variant | protocol | ΔPSNR ours [95% CI] | resolved | ΔPSNR '
           'published | ΔSSIM ours [95% CI] | resolved | ΔSSIM published |',
           '| --- | --- | ---: | --- | ---: | ---: | --- | ---: |']
  for entry in content['comparisons']:
    cells = []
    for metric in ('psnr', 'ssim'):
      difference = entry[metric]
      if difference is None:
        cells += ['–', UNKNOWN]
      else:
        cells += [f'{_signed(difference.difference, metric)} '
                  f'{_interval(difference.low, difference.high, metric)}',
                  _resolved(difference)]
      cells.append(_signed(entry[f'published_{metric}'], metric))
    lines.append(f"| {entry['variant']} | {entry['protocol']} | "
                 + ' | '.join(cells) + ' |')
  return lines


def summary_line(content):
  counts = {}
  for run in content['runs']:
    counts[run['state']] = counts.get(run['state'], 0) + 1
  total = len(content['runs'])
  left = total - counts.get('done', 0) - counts.get('failed', 0)
  return (f"{total} runs: {counts.get('done', 0)} done, "
          f"{counts.get('failed', 0)} failed, {left} not finished; seeds "
          f"{', '.join(map(str, content['seeds']))}.")


def tables(content):
  """The Markdown the command prints and study.md opens with."""
  lines = [f"## {content['title']}", '', summary_line(content), '']
  lines += variant_table(content)
  comparison = comparison_table(content)
  if comparison:
    lines += [''] + comparison
  failed = [run for run in content['runs'] if run['state'] == 'failed']
  if failed:
    lines += ['', 'Failed runs (left out of the means):', '']
    lines += [f"- {run['run']}: {run['reason']}" for run in failed]
  return lines


def _markdown(content, plot_paths):
  lines = tables(content)
  lines += ['', '### Runs', '', '| run | state | PSNR | SSIM | folder |',
            '| --- | --- | ---: | ---: | --- |']
  protocol = content['protocols'][0]
  for run in content['runs']:
    figures = run['figures'] or {}
    lines.append(
        f"| {run['run']} | {run['state']} "
        f"| {_number(figures.get(f'{protocol}/psnr'), 'psnr')} "
        f"| {_number(figures.get(f'{protocol}/ssim'), 'ssim')} "
        f"| {run['folder']} |")
  if plot_paths:
    lines += ['', '### Plots', '']
    lines += [f'![{os.path.basename(path)}]({PLOTS}/'
              f'{os.path.basename(path)})' for path in plot_paths]
  if content['overrides']:
    lines += ['', f"Command-line overrides: {' '.join(content['overrides'])}"]
  return '\n'.join(lines) + '\n'


def _csv(content):
  buffer = io.StringIO()
  out = csv.writer(buffer, lineterminator='\n')
  header = ['variant', 'protocol', 'seeds_finished', 'seeds_failed']
  for metric in ('psnr', 'ssim'):
    header += [f'{metric}_mean', f'{metric}_std', f'{metric}_ci_low',
               f'{metric}_ci_high', f'published_{metric}', f'{metric}_gap']
  out.writerow(header + ['published_row'])
  for row in content['variants']:
    cells = [row['variant'], row['protocol'], row['seeds_finished'],
             row['seeds_failed']]
    for metric in ('psnr', 'ssim'):
      spread, published = row[metric], row['published'].get(metric)
      known = spread.std is not None
      cells += ['' if spread.mean is None else spread.mean,
                spread.std if known else UNKNOWN,
                spread.low if known else UNKNOWN,
                spread.high if known else UNKNOWN,
                '' if published is None else published,
                '' if published is None or spread.mean is None
                else spread.mean - published]
    out.writerow(cells + [row['published'].get('id', '')])
  return buffer.getvalue()


def _as_json(value):
  if isinstance(value, (statistics.Spread, statistics.Difference)):
    fields = dict(vars(value))
    if isinstance(value, statistics.Difference):
      fields['resolved'] = value.resolved
    return {key: (UNKNOWN if item is None and key in (
        'std', 'low', 'high', 'p_value', 'resolved') else item)
            for key, item in fields.items()}
  raise TypeError(type(value))


def _write(path, text):
  temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
  temporary.write_text(text)
  temporary.replace(path)


def write(study, workdir):
  """Writes study.md, study.csv, study.json and the plots; returns the
  content (`collect`) and the plot paths."""
  content = collect(study, workdir)
  plot_dir = workdir / PLOTS
  plot_dir.mkdir(parents=True, exist_ok=True)
  plot_paths = []
  for protocol in study.protocols:
    rows = [row for row in content['variants']
            if row['protocol'] == protocol]
    plot_paths.append(plots.summary_chart(
        plot_dir / f'summary_{protocol}.png', content['title'], rows,
        protocol))
    if study.axis:
      plot_paths.append(plots.line_chart(
          plot_dir / f'lines_{protocol}.png', content['title'], rows,
          protocol, study.axis))
  curves = []
  for variant in study.variants:
    seeds = []
    for seed in study.seeds:
      run_dir = runs_lib.folder(workdir, runs_lib.Run(variant.name, seed))
      try:
        records = writer.read_metrics(run_dir)
      except writer.MetricsFileError:
        records = []
      if records:
        seeds.append((seed, records))
    curves.append((variant.name, seeds))
  plot_paths.append(plots.curves_chart(plot_dir / 'curves.png',
                                       content['title'], curves))
  _write(workdir / 'study.md', _markdown(content, plot_paths))
  _write(workdir / 'study.csv', _csv(content))
  _write(workdir / 'study.json', json.dumps(
      {**content, 'plots': [os.fspath(p) for p in plot_paths]}, indent=1,
      default=_as_json) + '\n')
  return content, plot_paths
