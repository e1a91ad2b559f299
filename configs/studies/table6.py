r"""DCSFN paper Table 6 and Figure 7, the recurrent unit of the cross-scale
fusion on Rain100H: ConvRNN, ConvLSTM, ConvGRU (the full model); 3 seeds
each.

  python -m dcsfn_jax.study --study configs/studies/table6.py \
      --workdir runs/table6 --config.data_dir=~/tfds

Base: configs/rain100h.py:paper, 60,000 steps per run.
plots/lines_official.png redraws Figure 7 with our intervals.
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'table6'
  study.title = 'DCSFN paper Table 6: recurrent unit (Rain100H)'
  study.base = 'configs/rain100h.py:paper'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {}
  study.reference = 'GRU'
  study.axis = 'recurrent unit'
  study.variants = [
      {'name': unit, 'overrides': {'model.recurrent_unit': unit},
       'published': [f'paper/table6/{unit}']}
      for unit in ('RNN', 'LSTM', 'GRU')]
  return study
