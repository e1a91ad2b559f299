r"""Rain200L (new JORDER version, TPAMI 2019): 1800 train and 200 test pairs.

  python -m dcsfn_jax.prepare --dataset rain200l --manual_dir RAIN200L \
      --data_dir DATA
  python -m dcsfn_jax.train --config configs/rain200l.py \
      --workdir runs/rain200l --config.data_dir=DATA

Variants: `:official` (default, released network) and `:paper`.

Paper result: none; the DCSFN paper reports the old Rain100H/L (see
configs/rain100h.py), not Rain200L.
Schedule as released: 800 epochs x 1800 pairs / 24 = 60,000 steps; Adam
5e-4, x0.1 at milestones 36,000 and 48,000. Eval every 1200 steps = 16
epochs, as released.
Hardware and time: not measured yet.

Departures from the released code: RGB inside instead of BGR; augmentation
randomness from (seed, epoch, index) (see configs/rain100h.py).
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  config = train_config.base_config(train_config.variant_name(arg))
  config.dataset = 'rain200l'
  config.eval_every_steps = 1200
  config.checkpoint_every_steps = 1000
  return config
