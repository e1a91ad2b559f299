r"""DCSFN paper Table 4, the inner-scale connection on Rain100H: without and
with (the full model); 3 seeds each.

  python -m dcsfn_jax.study --study configs/studies/table4.py \
      --workdir runs/table4 --config.data_dir=~/tfds

Base: configs/rain100h.py:paper, 60,000 steps per run.
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'table4'
  study.title = 'DCSFN paper Table 4: inner-scale connection (Rain100H)'
  study.base = 'configs/rain100h.py:paper'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {}
  study.reference = 'with_inner'
  study.axis = ''
  study.variants = [
      {'name': 'without_inner',
       'overrides': {'model.inner_scale_connection': False},
       'published': ['paper/table4/without']},
      {'name': 'with_inner', 'published': ['paper/table4/with']},
  ]
  return study
