r"""Demo study: the demo network on synthetic rain, 3 variants x 3 seeds, on
a CPU.

  python -m dcsfn_jax.study --study configs/studies/demo.py \
      --workdir /tmp/dcsfn_study

Builds synthetic_rain if needed (as configs/demo.py does), then trains each
run for 300 steps of the demo recipe (the full demo run is 1000) and writes
the report and plots to the workdir. Variants: the demo network (full),
without the cross-scale fusion (model.cross_scale=False), and with one ICB
scale instead of two (model.num_scales=1); seeds 0, 1, 2.

Expected: full 25.27 ± 0.34 dB, no_cross_scale 23.78 ± 2.63 (one seed
stays near the rainy inputs' 20.47 dB), single_scale 25.34 ± 0.47 (PSNR over
the 8 test photos, official protocol, mean ± std of 3 seeds); three seeds
resolve neither difference. 6 min on 2 CPU cores (Intel Xeon), building the
dataset included.
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'demo'
  study.title = 'Demo study: demo network on synthetic rain'
  study.base = 'configs/demo.py'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {'total_steps': 300, 'checkpoint_every_steps': 300}
  study.reference = 'full'
  study.axis = ''
  study.variants = [
      {'name': 'full'},
      {'name': 'no_cross_scale', 'overrides': {'model.cross_scale': False}},
      {'name': 'single_scale', 'overrides': {'model.num_scales': 1}},
  ]
  return study
