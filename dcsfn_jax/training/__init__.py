"""The pieces of the trainer.

  config     every training field, its default and the static checks
  losses     -SSIM (the released objective), optionally + L1
  schedules  the released multistep learning-rate schedule
  state      the train state (with the optional EMA), its two layouts and
             the jitted step (with optional gradient accumulation)
  memory     the step's activation memory; remat='auto' resolved by it
  inputs     the train/eval sources, built across hosts where asked
  writer     metrics.jsonl, TensorBoard and panels
  trainer    `train_and_evaluate`: resume, the loop, periodic eval and saves
"""
