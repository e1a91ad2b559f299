r"""DCSFN paper Table 1: the text's network (configs/*.py:paper) on Rain100H,
Rain100L and Rain1200, 3 seeds each, against the paper's figures.

  python -m dcsfn_jax.study --study configs/studies/table1.py \
      --workdir runs/table1 --config.data_dir=~/tfds

Each dataset's config keeps its released schedule (800 epochs): Rain100H
60,000 steps, Rain100L 6,666, Rain1200 400,000 (batch 24). No comparison
between variants: they are different datasets.
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'table1'
  study.title = 'DCSFN paper Table 1 (paper network, official protocol)'
  study.base = 'configs/rain100h.py:paper'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {}
  study.reference = ''
  study.axis = ''
  study.variants = [
      {'name': 'rain100h', 'published': ['paper/table1/rain100h']},
      {'name': 'rain100l', 'base': 'configs/rain100l.py:paper',
       'published': ['paper/table1/rain100l']},
      {'name': 'rain1200', 'base': 'configs/rain1200.py:paper',
       'published': ['paper/table1/rain1200']},
  ]
  return study
