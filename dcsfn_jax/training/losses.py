"""Training loss: -SSIM (the released objective), optionally mixed with L1."""
import jax.numpy as jnp

from dcsfn_jax import metrics


def derain_loss(derained, clean, *, ssim_padding='same', l1_weight=0.0):
  """-SSIM(derained, clean) + l1_weight * L1, on the unclamped output.

  SSIM is `metrics.ssim` (11x11 Gaussian, sigma 1.5, data range 1, mean over
  batch, pixels and channels), as the released cal_ssim.py computes it.

  Args:
    derained, clean: [B, H, W, 3] float32; `derained` is not clamped.
    ssim_padding: 'same' (zero padding, as released) or 'valid'.
    l1_weight: 0 reproduces the released objective.

  Returns:
    (loss, {'ssim': mean SSIM, 'l1': mean absolute error}), scalars.
  """
  if ssim_padding not in metrics.SSIM_PADDINGS:
    raise ValueError(f'ssim_padding must be one of {metrics.SSIM_PADDINGS}, got '
                     f'{ssim_padding!r}.')
  ssim_value = jnp.mean(metrics.ssim(derained, clean, padding=ssim_padding))
  l1 = jnp.mean(jnp.abs(derained - clean))
  return -ssim_value + l1_weight * l1, {'ssim': ssim_value, 'l1': l1}
