r"""DCSFN paper Table 5 and Figure 6, the number of ICB scales K on
Rain100H: K = 1, 2, 3 (the paper's choice) and 4 (the released code's);
3 seeds each.

  python -m dcsfn_jax.study --study configs/studies/table5.py \
      --workdir runs/table5 --config.data_dir=~/tfds

Base: configs/rain100h.py:paper, 60,000 steps per run. The paper's K=1 and
K=2 differ by 0.01 dB: the report says whether three seeds can tell them
apart. plots/lines_official.png redraws Figure 6 with our intervals.
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'table5'
  study.title = 'DCSFN paper Table 5: ICB scales K (Rain100H)'
  study.base = 'configs/rain100h.py:paper'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {}
  study.reference = 'K=3'
  study.axis = 'ICB scales K'
  study.variants = [
      {'name': f'K={k}', 'overrides': {'model.num_scales': k},
       'published': [f'paper/table5/K={k}']} for k in (1, 2, 3, 4)]
  return study
