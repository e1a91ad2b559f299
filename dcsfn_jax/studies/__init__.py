"""Studies: variants x seeds of training runs, and their report.

  spec        a study config: its checks, each variant's training config
  runs        the runs, their shares, folders and where each stands
  claims      which process trains which run (atomic claims, heartbeats)
  runner      one `python -m dcsfn_jax.train` process per run
  statistics  spread over seeds, Welch differences (scipy.stats)
  plots       the charts (matplotlib, Agg)
  report      study.md, study.csv, study.json
"""
