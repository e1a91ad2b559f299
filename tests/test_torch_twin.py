"""The PyTorch twin is keyed and shaped exactly like the released module."""
import re

import pytest

torch = pytest.importorskip('torch')

from dcsfn_jax.pytorch.torch_twin import build_torch_model
from dcsfn_jax.models import preset


def _tiny(**overrides):
  config = preset('official')
  config.update(channels=4, num_blocks=2, convs_per_scale=2)
  config.update(overrides)
  return config


def _expected_official_keys(channels=20, blocks=16, convs=4):
  """The released state_dict's key -> shape, written from REFERENCE §2.5."""
  c = channels
  conv3 = lambda o, i: {'weight': (o, i, 3, 3), 'bias': (o,)}
  conv1 = lambda o, i: {'weight': (o, i, 1, 1), 'bias': (o,)}
  entries = {'convert.0': conv3(c, 3)}
  for part in ('encoder', 'decoder'):
    for scale in (1, 2, 4):
      prefix = f'{part}_scale{scale}'
      for i in range(blocks):
        for pool in (1, 2, 4, 8):
          for j in range(convs):
            entries[f'{prefix}.units.{i}.scale{pool}.{j}.0'] = conv3(c, c)
        for fusion in ('fusion84', 'fusion42', 'fusion21'):
          entries[f'{prefix}.units.{i}.{fusion}.0'] = conv1(c, 2 * c)
        entries[f'{prefix}.units.{i}.fusion_all.0'] = conv1(c, 4 * c)
        entries[f'{prefix}.conv1x1.{i}.0'] = conv1(c, (i + 2) * c)
  for fusion in ('fusion_1_2_1', 'fusion_1_2_2', 'fusion_2_2_1',
                 'fusion_2_2_2'):
    entries[f'{fusion}.0'] = conv1(c, 2 * c)
  for cell in ('rec1_1', 'rec1_2', 'rec1_4', 'rec2_1', 'rec2_2', 'rec2_4'):
    for gate in ('xz', 'xr', 'xn', 'hz', 'hr', 'hn'):
      entries[f'{cell}.conv_{gate}'] = conv3(c, c)
  entries['merge.0'] = conv1(3, 3 * c)
  entries['merge.2'] = conv3(3, 3)
  return {f'{prefix}.{leaf}': shape for prefix, leaves in entries.items()
          for leaf, shape in leaves.items()}


def _shapes(module):
  return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _count(shapes, pattern='.*'):
  total = 0
  for key, shape in shapes.items():
    if re.match(pattern, key):
      n = 1
      for d in shape:
        n *= d
      total += n
  return total


@pytest.fixture(scope='module')
def official_shapes():
  return _shapes(build_torch_model(preset('official')))


def test_official_state_dict_matches_released_keys_shapes_and_totals(
    official_shapes):
  shapes = official_shapes
  expected = _expected_official_keys()
  assert sorted(set(expected) - set(shapes)) == [], 'keys missing from twin'
  assert sorted(set(shapes) - set(expected)) == [], 'keys the released lacks'
  mismatched = {k: (shapes[k], expected[k]) for k in expected
                if shapes[k] != expected[k]}
  assert mismatched == {}
  assert len(shapes) == 4118
  assert _count(shapes) == 6_453_147


@pytest.mark.parametrize('pattern, expected', [
    (r'convert\.', 560),
    (r'encoder_scale1\.', 1_053_120),
    (r'decoder_scale4\.', 1_053_120),
    (r'rec2_2\.', 21_720),
    (r'fusion_1_2_1\.', 820),
    (r'merge\.', 267),
])
def test_official_part_sizes_match_reference(official_shapes, pattern,
                                             expected):
  assert _count(official_shapes, pattern) == expected


def test_paper_preset_uses_grouped_single_convs_on_three_scales():
  shapes = _shapes(build_torch_model(preset('paper')))
  unit = 'encoder_scale2.units.5.'
  assert shapes[unit + 'scale4.0.0.weight'] == (32, 8, 3, 3)
  assert unit + 'scale4.1.0.weight' not in shapes
  assert not any(k.startswith(unit + 'scale8') for k in shapes)
  assert unit + 'fusion84.0.weight' not in shapes
  assert shapes[unit + 'fusion_all.0.weight'] == (32, 96, 1, 1)


@pytest.mark.parametrize('overrides, present, absent', [
    (dict(dense_connection=False), [], ['encoder_scale1.conv1x1.0.0.weight']),
    (dict(inner_scale_connection=False),
     ['encoder_scale1.units.0.fusion_all.0.weight'],
     ['encoder_scale1.units.0.fusion21.0.weight']),
    (dict(num_scales=1), ['encoder_scale1.units.0.scale1.1.0.weight'],
     ['encoder_scale1.units.0.scale2.0.0.weight',
      'encoder_scale1.units.0.fusion_all.0.weight']),
    (dict(cross_scale=False), ['rec1_1.conv_xz.weight'],
     ['fusion_1_2_1.0.weight']),
    (dict(recurrent_unit='LSTM'),
     ['rec1_4.conv_xf.weight', 'rec2_1.conv_hj.bias', 'fusion_2_2_2.0.bias'],
     ['rec1_4.conv_xz.weight']),
    (dict(recurrent_unit='RNN'), ['rec1_1.conv_x.weight', 'rec1_1.conv_h.bias'],
     ['rec1_1.conv_xz.weight']),
    (dict(recurrent_unit='Conv'), ['rec2_4.conv.weight'],
     ['rec2_4.conv_x.weight']),
    (dict(single=True),
     ['encoder.units.1.scale8.1.0.weight', 'decoder.conv1x1.1.0.bias',
      'merge.0.weight', 'merge.2.weight'],
     ['encoder_scale1.units.0.scale1.0.0.weight', 'rec1_1.conv_xz.weight',
      'fusion_1_2_1.0.weight']),
])
def test_variant_keys_follow_the_switches(overrides, present, absent):
  keys = set(build_torch_model(_tiny(**overrides)).state_dict())
  assert [k for k in present if k not in keys] == []
  assert [k for k in absent if k in keys] == []


def test_single_merge_maps_channels_to_rgb():
  shapes = _shapes(build_torch_model(_tiny(single=True)))
  assert shapes['merge.0.weight'] == (3, 4, 1, 1)
  assert shapes['merge.2.weight'] == (3, 3, 3, 3)


@pytest.mark.parametrize('overrides', [{}, dict(single=True),
                                       dict(recurrent_unit='LSTM')])
def test_intermediates_expose_the_rain_estimate(overrides):
  model = build_torch_model(_tiny(**overrides))
  images = torch.rand(1, 3, 37, 45)
  with torch.no_grad():
    derained, features = model(images, return_intermediates=True)
  assert features['rain_estimate'].shape == images.shape
  torch.testing.assert_close(derained, images - features['rain_estimate'],
                             rtol=0, atol=0)
  assert features['converted'].shape == (1, 4, 37, 45)


def test_rejects_an_invalid_config_naming_the_field():
  with pytest.raises(ValueError, match='recurrent_unit'):
    build_torch_model(_tiny(recurrent_unit='Transformer'))
  with pytest.raises(ValueError, match='conv_groups'):
    build_torch_model(_tiny(conv_groups=3))
