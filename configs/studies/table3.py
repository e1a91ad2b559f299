r"""DCSFN paper Table 3, network design on Rain100H: M1 without skip
connection, M2 without dense connection, M3 a single network (no
cross-scale sub-networks), M4 the full model; 3 seeds each.

  python -m dcsfn_jax.study --study configs/studies/table3.py \
      --workdir runs/table3 --config.data_dir=~/tfds

Base: configs/rain100h.py:paper (K=3, 32 channels, grouped convs), 60,000
steps per run. Each variant is compared with M4.
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'table3'
  study.title = 'DCSFN paper Table 3: network design (Rain100H)'
  study.base = 'configs/rain100h.py:paper'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {}
  study.reference = 'M4_full'
  study.axis = ''
  study.variants = [
      {'name': 'M1_no_skip', 'overrides': {'model.skip_connection': False},
       'published': ['paper/table3/M1']},
      {'name': 'M2_no_dense', 'overrides': {'model.dense_connection': False},
       'published': ['paper/table3/M2']},
      {'name': 'M3_single', 'overrides': {'model.single': True},
       'published': ['paper/table3/M3']},
      {'name': 'M4_full', 'published': ['paper/table3/M4']},
  ]
  return study
