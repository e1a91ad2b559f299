"""With weights in the released layout (channel_order='bgr'), evaluate's
'official' figures are what the released eval.py computes: the network run
in BGR on the full image at batch 1, PSNR of the float output clipped to
[0, 255] (no rounding) and the training SSIM with zero padding. The released
network is played by the PyTorch twin; the released metric is re-derived here
in torch/numpy from its definition."""
import math

import numpy as np
import pytest

from dcsfn_jax.evaluation import evaluator
from dcsfn_jax import models
from dcsfn_jax.pytorch import from_torch_state_dict

torch = pytest.importorskip('torch')
from dcsfn_jax.pytorch.torch_twin import build_torch_model  # pylint: disable=g-import-not-at-top
from released_ssim import released_ssim  # pylint: disable=g-import-not-at-top,wrong-import-position


def _released_style_psnr(derained_255, clean_255):
  derained_255 = np.clip(derained_255, 0, 255)
  clean_255 = np.clip(clean_255, 0, 255)
  mse = np.mean((derained_255 / 255. - clean_255 / 255.)**2)
  return 100.0 if mse == 0 else 20 * math.log10(1 / math.sqrt(mse))


def test_official_protocol_reproduces_the_released_eval_on_twin_weights():
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2, convs_per_scale=1,
                channel_order='bgr')
  torch.manual_seed(0)
  twin = build_torch_model(config).eval()
  params = from_torch_state_dict(twin.state_dict(), config)

  rng = np.random.default_rng(0)
  examples = []
  for index, (height, width) in enumerate([(37, 45), (40, 33)]):
    clean = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rainy = np.clip(clean + rng.integers(0, 80, clean.shape), 0,
                    255).astype(np.uint8)
    examples.append({'name': f'pair_{index}', 'rainy': rainy,
                     'clean': clean})

  rows, summary = evaluator.evaluate_examples(
      params, config, examples, protocols=['official'], progress=False)

  expected = []
  for example in examples:
    # The released loader: cv2 (BGR) uint8 / 255, NCHW, batch 1.
    to_bgr = lambda x: torch.from_numpy(np.ascontiguousarray(
        x[..., ::-1].transpose(2, 0, 1)[None] / np.float32(255)))
    rainy, clean = to_bgr(example['rainy']), to_bgr(example['clean'])
    with torch.no_grad():
      derained = twin(rainy)
    expected.append((
        _released_style_psnr(derained.numpy() * 255, clean.numpy() * 255),
        released_ssim(derained, clean).item()))

  for row, (psnr, ssim) in zip(rows, expected):
    assert abs(row['official/psnr'] - psnr) < 1e-4, (row, psnr)
    assert abs(row['official/ssim'] - ssim) < 1e-5, (row, ssim)
  np.testing.assert_allclose(summary['means']['official/psnr'],
                             np.mean([e[0] for e in expected]), atol=1e-4)
  # The twin must actually change the image, or the comparison is empty.
  assert all(psnr < 60 for psnr, _ in expected)
