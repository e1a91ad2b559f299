r"""Demo: a reduced DCSFN learns to remove synthetic rain in minutes on a CPU.

  python -m dcsfn_jax.train --config configs/demo.py --workdir /tmp/dcsfn_demo

The first run builds `synthetic_rain` (rain streaks drawn onto the photos that
ship with scikit-image; no download; 48 train and 8 test pairs from disjoint
photos) in --config.data_dir (default: tfds' ~/tensorflow_datasets), trains
1000 steps, evaluates on the 8 held-out test photos at full size and writes
panels (rainy | derained | clean | error map) to WORKDIR/panels/.

Expected (benchmarks/RESULTS.md): official protocol on the 8 test photos at
native sizes, 26.0 dB PSNR / 0.836 SSIM against 20.47 dB / 0.650 for the
rainy inputs (+5.5 dB); 2 min 05 s wall including building the dataset and
1.8 GB peak RSS, on 2 CPU cores (Intel Xeon, fresh --config.data_dir).
The model knows only these synthetic streaks: it shows the pipeline at
work, it is not a deraining model for real photos.

Departures from the released recipe, to fit a few CPU minutes: a smaller
network (16 channels, 2 blocks per encoder/decoder, 2 ICB scales, one conv
per scale), batch 4 of 48 px patches, 1000 steps at lr 2e-3 (still divided by
10 at 3/5 and 4/5 of the run), and L1 added to the -SSIM loss (weight 1),
which lifts PSNR sooner. Variant `:smoke` is a seconds-long run for tests
and the notebook.
"""
from dcsfn_jax.training import config as train_config


def get_config(arg=None):
  variant = train_config.variant_name(arg, ('demo', 'smoke'))
  config = train_config.base_config('official')
  config.dataset = 'synthetic_rain'
  config.data_dir = ''
  config.prepare_data = True

  config.model.channels = 16
  config.model.num_blocks = 2
  config.model.num_scales = 2
  config.model.convs_per_scale = 1

  config.batch_size = 4
  config.patch_size = 48
  config.augment = 'released'
  config.total_steps = 1000
  config.learning_rate = 2e-3
  config.l1_weight = 1.0
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 250
  config.num_panels = 2

  if variant == 'smoke':
    config.model.channels = 4
    config.model.num_blocks = 1
    config.model.num_scales = 1
    config.batch_size = 4
    config.patch_size = 16
    config.augment = 'crop'
    config.total_steps = 4
    config.l1_weight = 0.0
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
    config.eval_max_images = 2
    config.num_panels = 1
  return config
