r"""The recurrent unit on Rain200H with the released network, against
derain-toolbox's retrains (one seed each there): RNN 27.39, LSTM 27.93,
GRU 28.28 dB; 3 seeds each here.

  python -m dcsfn_jax.study --study configs/studies/recurrent_rain200h.py \
      --workdir runs/recurrent_rain200h --config.data_dir=~/tfds

Base: configs/rain200h.py (the released network: C=20, 4 scales, 4 convs
per scale, as the toolbox's dcsfn_c20s4l16_* configs), 60,000 steps per
run. Patches are cropped without flips, as the toolbox's pipeline does
(RandomCrop only). The toolbox scores uint8-rounded outputs with a 'valid' SSIM, so its figures are marked
≈ (dcsfn_jax/assets/PUBLISHED_RESULTS.md).
"""
import ml_collections


def get_config():
  study = ml_collections.ConfigDict()
  study.name = 'recurrent_rain200h'
  study.title = 'Recurrent unit on Rain200H (released network)'
  study.base = 'configs/rain200h.py'
  study.seeds = 3
  study.protocols = ('official',)
  study.overrides = {'augment': 'crop'}
  study.reference = 'GRU'
  study.axis = 'recurrent unit'
  study.variants = [
      {'name': unit, 'overrides': {'model.recurrent_unit': unit},
       'published': [f'derain_toolbox/{unit.lower()}/rain200h']}
      for unit in ('RNN', 'LSTM', 'GRU')]
  return study
