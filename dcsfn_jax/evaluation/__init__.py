"""Scoring derained images against clean ones.

  evaluator  per-image metrics summed under a mask, divided once; the one
             evaluation loop of the trainer, `evaluate`, `score` and the
             notebook
  scoring    any method's saved results paired with the clean images
  report     per_image.csv, summary.json, results.md with published figures
"""
