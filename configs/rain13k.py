r"""Rain13K (MPRNet/Restormer): 13,712 train pairs; tests Test100, Rain100H,
Rain100L, Test2800, Test1200.

  python -m dcsfn_jax.prepare --dataset rain13k --manual_dir RAIN13K \
      --data_dir DATA
  python -m dcsfn_jax.train --config configs/rain13k.py \
      --workdir runs/rain13k --config.data_dir=DATA
  # then score every test set under the field's protocol (y_uint8):
  python -m dcsfn_jax.evaluate --help

Variants: `:official` (default, released network) and `:paper`.

Reference result (PromptRestorer's Table 1, DCSFN trained on Rain13K,
y_uint8 protocol; not the DCSFN paper; dcsfn_jax/assets/PUBLISHED_RESULTS.md):
Rain100H 28.98 / 0.887, Rain100L 34.70 / 0.961, Test1200 32.92 / 0.937.
During training this config evaluates on Rain100H with the 'official'
protocol (choose another with --config.eval_split=test100 etc.).
Schedule as released: int(800 x 13,712 / 24) = 457,066 steps; Adam 5e-4,
x0.1 at 3/5 and 4/5 of the epochs. Eval every 9136 steps = 16 epochs.
Hardware and time: not measured yet.

Departures from the released code: RGB inside instead of BGR; augmentation
randomness from (seed, epoch, index) (see configs/rain100h.py).
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  config = train_config.base_config(train_config.variant_name(arg))
  config.dataset = 'rain13k'
  config.eval_split = 'rain100h'
  config.eval_every_steps = 9136
  config.checkpoint_every_steps = 2000
  return config
