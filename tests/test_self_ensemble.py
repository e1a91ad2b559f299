"""Geometric self-ensemble: exact inverses, and no effect on a model that is
symmetric already."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.inference import ensemble
from dcsfn_jax.evaluation import evaluator

# Unoptimised XLA: the tiny model compiles several times faster, and every
# comparison here is between two programs compiled the same way.
pytestmark = pytest.mark.usefixtures('fast_compiles')


@pytest.mark.parametrize('turns,flip', ensemble.TRANSFORMS)
def test_each_inverse_undoes_its_transform_exactly(turns, flip):
  images = jnp.asarray(np.random.default_rng(0).random((2, 5, 7, 3),
                                                       dtype=np.float32))
  moved = ensemble.apply(images, turns, flip)
  assert moved.shape == ((2, 7, 5, 3) if turns % 2 else images.shape)
  np.testing.assert_array_equal(ensemble.invert(moved, turns, flip), images)


def test_the_eight_transforms_are_distinct():
  images = jnp.arange(2 * 3 * 3, dtype=jnp.float32).reshape(1, 3, 3, 2)
  seen = {np.asarray(ensemble.apply(images, t, f)).tobytes()
          for t, f in ensemble.TRANSFORMS}
  assert len(seen) == 8


def test_a_symmetric_model_is_unchanged_bit_for_bit():
  # Per-pixel: commutes with every flip and rotation.
  symmetric = lambda images: jnp.tanh(3.0 * images) - 0.1 * images**2
  images = jnp.asarray(np.random.default_rng(1).random((1, 6, 9, 3),
                                                       dtype=np.float32))
  np.testing.assert_array_equal(ensemble.self_ensemble(symmetric)(images),
                                symmetric(images))


def test_an_asymmetric_model_is_averaged():
  # A horizontal difference: flips negate it, so the ensemble cancels it.
  shift = lambda images: images - jnp.roll(images, 1, axis=2)
  images = jnp.asarray(np.random.default_rng(2).random((1, 6, 6, 3),
                                                       dtype=np.float32))
  assert float(jnp.max(jnp.abs(shift(images)))) > 0.1
  averaged = ensemble.self_ensemble(shift)(images)
  assert float(jnp.max(jnp.abs(averaged - shift(images)))) > 1e-3


def test_the_evaluator_runs_dcsfn_as_an_ensemble():
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2, convs_per_scale=1)
  params = models.init_params(platforms.model_for(config, jax.devices()),
                              jax.random.key(0), (1, 16, 16, 3))
  rng = np.random.default_rng(3)
  clean = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
  example = [{'name': 'a', 'rainy': clean, 'clean': clean}]
  scored = {}
  for flag in (False, True):
    found = []
    # Only the derained image is checked: one protocol, no rainy baseline,
    # so that the jitted function compiles no metric it does not need.
    evaluator.Evaluator(config, self_ensemble=flag, protocols=('official',),
                        baseline=False).run(
        models.runtime_layout(params, config), example, on_image=found.append)
    scored[flag] = found[0].derained
  model = platforms.model_for(config, jax.devices())
  expected = jax.jit(ensemble.self_ensemble(
      lambda x: model.apply({'params': params}, x)))(
          jnp.asarray(clean, jnp.float32)[None] / 255.0)[0]
  np.testing.assert_allclose(scored[True], expected, atol=1e-6)
  assert np.max(np.abs(scored[True] - scored[False])) > 1e-4
