r"""Rain1200 (DID-MDN): 12,000 train pairs in three densities; 1,200 test.

  python -m dcsfn_jax.prepare --dataset rain1200 --manual_dir DID_MDN \
      --data_dir DATA
  python -m dcsfn_jax.train --config configs/rain1200.py \
      --workdir runs/rain1200 --config.data_dir=DATA

Variants: `:official` (default, released network) and `:paper`.

Paper result (Table 1, protocol unstated): 33.19 dB PSNR, 0.93 SSIM.
Schedule as released: 800 epochs x 12,000 pairs / 24 = 400,000 steps; Adam
5e-4, x0.1 at milestones 240,000 and 320,000. Eval every 8000 steps = 16
epochs, as released.
Hardware and time: not measured yet.

Departures from the released code: RGB inside instead of BGR; augmentation
randomness from (seed, epoch, index) (see configs/rain100h.py).
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  config = train_config.base_config(train_config.variant_name(arg))
  config.dataset = 'rain1200'
  config.eval_every_steps = 8000
  config.checkpoint_every_steps = 2000
  return config
