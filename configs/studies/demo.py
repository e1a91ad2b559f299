r"""Demo study: the demo network on synthetic rain, 3 variants x 3 seeds, in
minutes on a CPU.

  python -m dcsfn_jax.study --study configs/studies/demo.py \
      --workdir /tmp/dcsfn_study

Builds synthetic_rain if needed (as configs/demo.py does), then trains each
run for a shortened demo schedule and writes the report and plots.
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
