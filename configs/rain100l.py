r"""Rain100L (old JORDER version): RainTrainL, 200 pairs; test Rain100L, 100.

  python -m dcsfn_jax.prepare --dataset rain100l --manual_dir RAIN100L \
      --data_dir DATA
  python -m dcsfn_jax.train --config configs/rain100l.py \
      --workdir runs/rain100l --config.data_dir=DATA

Variants: `:official` (default, released network) and `:paper`.

Paper result (Table 1, protocol unstated): 38.96 dB PSNR, 0.99 SSIM.
Schedule as released: int(800 x 200 / 24) = 6666 steps; Adam 5e-4, x0.1 at
milestones 4000 and 5333 (first decayed updates 3999 and 5332, 0-based).
Eval every 128 steps = 16 epochs, as released.
Hardware and time: not measured yet.

Departures from the released code: RGB inside instead of BGR; augmentation
randomness from (seed, epoch, index) (see configs/rain100h.py).
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  config = train_config.base_config(train_config.variant_name(arg))
  config.dataset = 'rain100l'
  config.eval_every_steps = 128
  config.checkpoint_every_steps = 500
  return config
