"""The released cal_ssim.py SSIM, written out in torch as an independent
reference (11x11 Gaussian, sigma 1.5, zero padding 5, mean over everything)."""
from math import exp

import torch
import torch.nn.functional as functional


def released_ssim(derained, clean):
  """derained, clean: torch [B, 3, H, W] -> scalar mean SSIM (differentiable)."""
  taps = torch.tensor([exp(-(x - 5)**2 / (2 * 1.5**2)) for x in range(11)])
  taps = taps / taps.sum()
  window = (taps[:, None] @ taps[None, :]).float()[None, None]
  window = window.expand(3, 1, 11, 11).contiguous()
  blur = lambda z: functional.conv2d(z, window, padding=5, groups=3)
  mu_a, mu_b = blur(derained), blur(clean)
  var_a = blur(derained * derained) - mu_a**2
  var_b = blur(clean * clean) - mu_b**2
  cov = blur(derained * clean) - mu_a * mu_b
  c1, c2 = 0.01**2, 0.03**2
  ssim_map = (((2 * mu_a * mu_b + c1) * (2 * cov + c2))
              / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
  return ssim_map.mean()
