"""The training loss is minus the released SSIM, optionally plus L1."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcsfn_jax.training import losses


def _pair(seed=0, shape=(2, 40, 33, 3)):
  rng = np.random.default_rng(seed)
  clean = rng.random(shape).astype(np.float32)
  derained = (clean + 0.1 * rng.normal(size=shape)).astype(np.float32)
  return derained, clean


def _released_ssim(derained, clean):
  torch = pytest.importorskip('torch')
  from released_ssim import released_ssim  # pylint: disable=g-import-not-at-top
  return released_ssim(torch.from_numpy(derained).permute(0, 3, 1, 2),
                       torch.from_numpy(clean).permute(0, 3, 1, 2)).item()


def test_loss_is_minus_the_released_ssim():
  derained, clean = _pair()
  loss, aux = losses.derain_loss(jnp.asarray(derained), jnp.asarray(clean))
  expected = _released_ssim(derained, clean)
  np.testing.assert_allclose(float(aux['ssim']), expected, atol=2e-6)
  np.testing.assert_allclose(float(loss), -expected, atol=2e-6)


def test_valid_padding_differs_and_l1_mixes_in():
  derained, clean = _pair(1)
  same, aux = losses.derain_loss(derained, clean)
  valid, _ = losses.derain_loss(derained, clean, ssim_padding='valid')
  assert abs(float(same) - float(valid)) > 1e-4
  mixed, _ = losses.derain_loss(derained, clean, l1_weight=0.5)
  np.testing.assert_allclose(float(mixed), float(same) + 0.5 * float(aux['l1']),
                             rtol=1e-6)
  np.testing.assert_allclose(float(aux['l1']),
                             np.mean(np.abs(derained - clean)), rtol=1e-6)


def test_perfect_output_scores_minus_one_and_gradients_are_finite():
  _, clean = _pair(2)
  loss, _ = losses.derain_loss(clean, clean)
  np.testing.assert_allclose(float(loss), -1.0, atol=1e-6)
  grad = jax.grad(lambda x: losses.derain_loss(x, clean)[0])(clean + 0.01)
  assert np.all(np.isfinite(np.asarray(grad)))


def test_unknown_padding_is_rejected():
  derained, clean = _pair()
  with pytest.raises(ValueError, match='ssim_padding'):
    losses.derain_loss(derained, clean, ssim_padding='reflect')
