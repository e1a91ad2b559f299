"""Image-quality metrics: the named PSNR/SSIM protocols and NIQE.

Everything the trainer, the evaluator and `score` report comes from here, so
a figure always names the protocol that produced it. Nothing here imports the
model: the metrics score any method's outputs.
"""
from dcsfn_jax.metrics.pixels import to_float
from dcsfn_jax.metrics.pixels import to_uint8
from dcsfn_jax.metrics.protocols import OFFICIAL_PSNR_OF_IDENTICAL
from dcsfn_jax.metrics.protocols import PROTOCOLS
from dcsfn_jax.metrics.protocols import PROTOCOLS_HELP
from dcsfn_jax.metrics.protocols import PROTOCOL_DESCRIPTIONS
from dcsfn_jax.metrics.protocols import SSIM_PADDINGS
from dcsfn_jax.metrics.protocols import check_protocols
from dcsfn_jax.metrics.protocols import gaussian_window
from dcsfn_jax.metrics.protocols import image_metrics
from dcsfn_jax.metrics.protocols import matlab_ssim_map
from dcsfn_jax.metrics.protocols import metric_sums
from dcsfn_jax.metrics.protocols import official_metrics
from dcsfn_jax.metrics.protocols import psnr_from_mse
from dcsfn_jax.metrics.protocols import replicate_pad
from dcsfn_jax.metrics.protocols import rgb_to_y_float
from dcsfn_jax.metrics.protocols import rgb_to_y_uint8
from dcsfn_jax.metrics.protocols import ssim
from dcsfn_jax.metrics.protocols import ssim_map
from dcsfn_jax.metrics.protocols import y_float_metrics
from dcsfn_jax.metrics.protocols import y_uint8_metrics
