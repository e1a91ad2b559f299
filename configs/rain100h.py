r"""Rain100H (old JORDER version): RainTrainH, 1800 pairs; test Rain100H, 100.

  python -m dcsfn_jax.prepare --dataset rain100h --manual_dir RAIN100H \
      --data_dir DATA
  python -m dcsfn_jax.train --config configs/rain100h.py \
      --workdir runs/rain100h --config.data_dir=DATA
  python -m dcsfn_jax.train --config configs/rain100h.py:paper \
      --workdir runs/rain100h_paper --config.data_dir=DATA

Variants: `:official` (default) is the released network (C=20, 4 scales, 4
convs per scale); `:paper` the text's (C=32, 3 scales, one grouped conv).

Paper result (Table 1, protocol unstated): 28.81 dB PSNR, 0.90 SSIM.
Schedule as released: 800 epochs x 1800 pairs / 24 = 60,000 steps; Adam
5e-4, x0.1 from update 35,999 and again from 47,999 (0-based; the released
loop steps MultiStepLR before each update). Eval every 1200 steps = 16
epochs, as released.
Hardware and time: a full run is not measured yet. On 2 CPU cores (Intel
Xeon, one XLA device per core) a step of 16 patches of 64 px takes 5.9 s
against 8.9 s for the PyTorch twin (`python benchmarks/speed.py
--cases=train --jax_devices=1,2 --repeats=3`; benchmarks/RESULTS.md), so
the 60,000 steps (about 4 days there) are an accelerator's job.

Departures from the released code: images are RGB inside (the released loop
feeds cv2's BGR; the loss and metrics are symmetric in the channels, the
learned weights are not); the augmentation draws from (seed, epoch, index)
instead of a RandomState repeated in every worker and epoch. For PReNet's
protocol without the 546 train pairs whose backgrounds reappear in the test
set, use --config.train_split=train_1254.
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  config = train_config.base_config(train_config.variant_name(arg))
  config.dataset = 'rain100h'
  config.eval_every_steps = 1200
  config.checkpoint_every_steps = 1000
  return config
