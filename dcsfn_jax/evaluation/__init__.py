"""Running a trained DCSFN: the evaluator, derain of photos, image I/O.

  evaluator  per-image metrics summed under a mask, divided once; the one
             evaluation loop of the trainer, `evaluate`, `score` and the
             notebook
  scoring    any method's saved results paired with the clean images
  report     per_image.csv, summary.json, results.md with published figures
  ensemble   the geometric self-ensemble (8 flips and rotations)
  derainer   photos of any size and mode in, derained PNGs out
  inference  the sharded jitted runner, shape buckets, tiling
  images     robust image reading, PNG writing, panels and error maps
"""
