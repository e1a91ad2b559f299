"""derain --tile against the whole-image result on a real photo: the seams
stay far below visibility (benchmarks/RESULTS.md has the demo model's
figures at tiles of 256 and 512 px)."""
import jax
import numpy as np
import skimage.data

from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.data import synthetic
from dcsfn_jax.inference import derainer

# PSNR (dB) of the tiled output against the whole-image one. Measured 2026-12-01
# with this test's model and photo: 61.6 dB at tile 64 / overlap 16 (at most 2
# levels apart).
MIN_TILED_PSNR = 55.0


def test_tiled_output_matches_the_whole_image_on_a_real_photo():
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2, convs_per_scale=1)
  params = models.init_params(platforms.model_for(config, jax.devices()),
                              jax.random.key(0), (1, 16, 16, 3))
  photo = skimage.data.astronaut()[96:288, 160:352]  # 192x192, a face
  rainy = synthetic.add_rain(photo, synthetic.PRESETS['heavy'], seed=0)
  whole = metrics.to_uint8(derainer.Derainer(params, config)(rainy))
  tiled = metrics.to_uint8(derainer.Derainer(params, config, tile=64)(rainy))
  error = np.mean((tiled.astype(np.float64) - whole) ** 2)
  psnr = 10 * np.log10(255.0**2 / error) if error else np.inf
  assert psnr >= MIN_TILED_PSNR, psnr
  assert error > 0  # the tiles really differ from the whole image
