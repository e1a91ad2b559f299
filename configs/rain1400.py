r"""Rain1400 (DDN): scenes 1-900 x 14 streak variants = 12,600 train pairs;
scenes 901-1000 x 14 = 1,400 test pairs.

  python -m dcsfn_jax.prepare --dataset rain1400 --manual_dir DDN \
      --data_dir DATA
  python -m dcsfn_jax.train --config configs/rain1400.py \
      --workdir runs/rain1400 --config.data_dir=DATA

Variants: `:official` (default, released network) and `:paper`.

Paper result: not among the figures collected in shared/REFERENCE.md §6.
Schedule as released: 800 epochs x 12,600 pairs / 24 = 420,000 steps; Adam
5e-4, x0.1 at milestones 252,000 and 336,000. Eval every 8400 steps = 16
epochs, as released.
Hardware and time: not measured yet.

Departures from the released code: RGB inside instead of BGR; augmentation
randomness from (seed, epoch, index) (see configs/rain100h.py).
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  config = train_config.base_config(train_config.variant_name(arg))
  config.dataset = 'rain1400'
  config.eval_every_steps = 8400
  config.checkpoint_every_steps = 2000
  return config
