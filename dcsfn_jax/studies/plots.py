"""The study's PNG charts (matplotlib, Agg: no display needed).

  summary_PROTOCOL.png  PSNR and SSIM per variant: each seed a dot, the mean
                        with its 95% interval, the published figure an x
  lines_PROTOCOL.png    for ordered variants (K = 1..4, RNN/LSTM/GRU): the
                        means against the variant with their intervals, and
                        the published line, as the paper's Figures 6-7
  curves.png            every run's training loss and eval PSNR against the
                        step, one column per variant, its seeds overlaid

Sizes are fixed (SUMMARY_SIZE, LINES_SIZE; curves CURVES_COLUMN_WIDTH per
variant by CURVES_HEIGHT), in pixels.
"""
import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot  # noqa: E402  pylint: disable=g-import-not-at-top

DPI = 100
SUMMARY_SIZE = (960, 420)
LINES_SIZE = (960, 420)
CURVES_COLUMN_WIDTH, CURVES_HEIGHT = 320, 560
_METRICS = (('psnr', 'PSNR (dB)'), ('ssim', 'SSIM'))
_OURS, _PUBLISHED = 'tab:blue', 'tab:red'


def _figure(size, rows=1, columns=2):
  return pyplot.subplots(rows, columns, squeeze=False,
                         figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def _save(figure, path):
  figure.tight_layout()
  with path.open('wb') as file:
    figure.savefig(file, format='png', dpi=DPI)
  pyplot.close(figure)
  return path


def _error_bar(spread):
  """(mean, [[below], [above]]) of a Spread; no bar when unknown."""
  if spread.low is None:
    return spread.mean, None
  return spread.mean, [[spread.mean - spread.low], [spread.high - spread.mean]]


def summary_chart(path, title, rows, protocol):
  """rows: the report's variant rows of `protocol`, in study order."""
  figure, axes = _figure(SUMMARY_SIZE)
  names = [row['variant'] for row in rows]
  for axis, (metric, label) in zip(axes[0], _METRICS):
    for x, row in enumerate(rows):
      values = row['values'][metric]
      axis.plot([x] * len(values), values, '.', color='gray', alpha=0.7,
                label='each seed' if x == 0 else None)
      spread = row[metric]
      if spread.mean is not None:
        mean, bar = _error_bar(spread)
        axis.errorbar([x], [mean], yerr=bar, fmt='o', color=_OURS,
                      capsize=5, mfc=_OURS if bar else 'white',
                      label='ours: mean, 95% CI' if x == 0 else None)
      published = row['published'].get(metric)
      if published is not None:
        axis.plot([x], [published], 'x', color=_PUBLISHED, markersize=10,
                  mew=2, label='published' if not any(
                      r['published'].get(metric) is not None
                      for r in rows[:x]) else None)
    axis.set_xticks(range(len(names)), names, rotation=20)
    axis.set_xlim(-0.5, len(names) - 0.5)
    axis.set_ylabel(label)
    axis.grid(axis='y', alpha=0.3)
    axis.legend(fontsize='small')
  figure.suptitle(f'{title} ({protocol} protocol)', fontsize='medium')
  return _save(figure, path)


def line_chart(path, title, rows, protocol, axis_label):
  """The means of ordered variants as a line, with the published line."""
  figure, axes = _figure(LINES_SIZE)
  names = [row['variant'] for row in rows]
  positions = list(range(len(rows)))
  for axis, (metric, label) in zip(axes[0], _METRICS):
    points = [(x, row[metric]) for x, row in zip(positions, rows)
              if row[metric].mean is not None]
    if points:
      below = [s.mean - s.low if s.low is not None else 0 for _, s in points]
      above = [s.high - s.mean if s.low is not None else 0 for _, s in points]
      axis.errorbar([x for x, _ in points], [s.mean for _, s in points],
                    yerr=[below, above], fmt='-o', color=_OURS, capsize=5,
                    label='ours: mean, 95% CI')
    published = [(x, row['published'].get(metric))
                 for x, row in zip(positions, rows)
                 if row['published'].get(metric) is not None]
    if published:
      axis.plot([x for x, _ in published], [v for _, v in published], '--x',
                color=_PUBLISHED, markersize=9, mew=2, label='published')
    axis.set_xticks(positions, names)
    axis.set_xlabel(axis_label)
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    axis.legend(fontsize='small')
  figure.suptitle(f'{title} ({protocol} protocol)', fontsize='medium')
  return _save(figure, path)


def curves_chart(path, title, curves):
  """curves: [(variant, [(seed, records of metrics.jsonl)])] in study
  order."""
  columns = max(len(curves), 2)
  figure, axes = _figure((CURVES_COLUMN_WIDTH * columns, CURVES_HEIGHT),
                         rows=2, columns=columns)
  for column, (variant, seeds) in enumerate(curves):
    loss_axis, eval_axis = axes[0][column], axes[1][column]
    for seed, records in seeds:
      for axis, name in ((loss_axis, 'train/loss'), (eval_axis, 'eval/psnr')):
        points = [(r['step'], r[name]) for r in records if name in r]
        if points:
          axis.plot(*zip(*points), '-o' if len(points) < 4 else '-',
                    markersize=4, label=f'seed {seed}')
    loss_axis.set_title(variant, fontsize='medium')
    loss_axis.set_ylabel('training loss')
    eval_axis.set_ylabel('eval PSNR (dB)')
    eval_axis.set_xlabel('step')
    for axis in (loss_axis, eval_axis):
      axis.grid(alpha=0.3)
      if axis.lines:
        axis.legend(fontsize='x-small')
  for column in range(len(curves), columns):
    axes[0][column].axis('off')
    axes[1][column].axis('off')
  figure.suptitle(f'{title}: training curves', fontsize='medium')
  return _save(figure, path)
