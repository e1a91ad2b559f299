"""The rain-streak synthesiser is deterministic and has its documented statistics."""
import math

import numpy as np
import pytest
from scipy import ndimage

from dcsfn_jax.data import load_split
from dcsfn_jax.data import synthetic
from dcsfn_jax.data.tfds_builder import TEST_PHOTOS, TRAIN_PHOTOS


def photo(height=40, width=50):
  rng = np.random.default_rng(0)
  return rng.integers(0, 200, (height, width, 3), np.uint8)


def test_same_seed_same_rain_other_seed_other_rain():
  style = synthetic.PRESETS['heavy']
  first = synthetic.add_rain(photo(), style, seed=3)
  np.testing.assert_array_equal(first, synthetic.add_rain(photo(), style, 3))
  assert not np.array_equal(first, synthetic.add_rain(photo(), style, 4))


@pytest.mark.parametrize('angle', [-25.0, 0.0, 12.0, 30.0])
def test_streak_angle_from_the_structure_tensor(angle):
  style = synthetic.RainStyle(density=5e-4, length=25, width=1.5, angle=angle)
  layer = synthetic.rain_layer(256, 256, style, np.random.default_rng(1))
  assert synthetic.dominant_streak_angle(layer) == pytest.approx(angle, abs=2.0)


@pytest.mark.parametrize('density', [1e-4, 3e-4])
def test_streak_density_is_seeds_per_pixel(density):
  # Sparse enough that streaks rarely touch: each connected component is one
  # streak. Streaks centred up to half a length outside still show.
  height = width = 1024
  length, angle = 15.0, 20.0
  visible_area = ((height + length * math.cos(math.radians(angle)))
                  * (width + length * math.sin(math.radians(angle))))
  style = synthetic.RainStyle(density=density, length=length, width=1,
                              angle=angle)
  eight_connected = np.ones((3, 3))
  counts = [ndimage.label(synthetic.rain_layer(
      height, width, style, np.random.default_rng(seed)) > 0.05,
                          structure=eight_connected)[1]
            for seed in range(4)]
  assert np.mean(counts) == pytest.approx(density * visible_area, rel=0.12)


def test_length_width_and_opacity_shape_the_layer():
  rng = lambda: np.random.default_rng(2)
  base = synthetic.RainStyle(density=2e-3, length=10, width=1, opacity=0.5)
  layer = synthetic.rain_layer(128, 128, base, rng())
  assert layer.max() <= 0.5 + 1e-6
  longer = synthetic.rain_layer(128, 128, synthetic.RainStyle(
      density=2e-3, length=30, width=1, opacity=0.5), rng())
  wider = synthetic.rain_layer(128, 128, synthetic.RainStyle(
      density=2e-3, length=10, width=3, opacity=0.5), rng())
  assert longer.mean() > 2 * layer.mean()
  assert wider.mean() > 2 * layer.mean()


def test_heavy_preset_has_more_rain_than_light():
  def rain_amount(preset):
    layer = synthetic.rain_layer(128, 128, synthetic.PRESETS[preset],
                                 np.random.default_rng(0))
    return layer.mean()
  assert rain_amount('heavy') > 3 * rain_amount('light')


def test_screen_and_additive_blending():
  clean = np.array([[[0.2, 0.5, 1.0]]], np.float32)
  layer = np.array([[0.5]], np.float32)
  np.testing.assert_allclose(synthetic.blend_rain(clean, layer, 'screen'),
                             [[[0.6, 0.75, 1.0]]], atol=1e-6)
  np.testing.assert_allclose(synthetic.blend_rain(clean, layer, 'additive'),
                             [[[0.7, 1.0, 1.0]]], atol=1e-6)


def test_out_of_range_controls_are_refused():
  with pytest.raises(ValueError, match='opacity=1.5'):
    synthetic.RainStyle(opacity=1.5)
  with pytest.raises(ValueError, match="blend='multiply'"):
    synthetic.RainStyle(blend='multiply')


def test_default_dataset_uses_disjoint_photos(synthetic_data_dir):
  assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
  photo_of = lambda name: name.rsplit('_', 2)[0]
  splits = {split: load_split('synthetic_rain', split, synthetic_data_dir)
            for split in ('train', 'test')}
  used = {split: {photo_of(source[i]['name']) for i in range(len(source))}
          for split, source in splits.items()}
  assert used['train'] and used['test'] and not used['train'] & used['test']
  for source in splits.values():
    for i in range(len(source)):
      example = source[i]
      assert max(example['rainy'].shape[:2]) == 72
      assert example['density'] in synthetic.PRESETS
      assert np.all(example['rainy'] >= example['clean'])
      assert np.any(example['rainy'] > example['clean'])
