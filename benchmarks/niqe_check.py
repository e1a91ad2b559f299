r"""NIQE of scikit-image's photos (and any files given), optionally side by
side with BasicSR's port, which matches the LIVE MATLAB release.

  python benchmarks/niqe_check.py [--basicsr_root /path/to/BasicSR] \
      [--image baboon.png ...]

BasicSR is not a dependency: point --basicsr_root at a checkout of it
(github.com/XPixelGroup/BasicSR) to load its `calculate_niqe` with its heavy
imports stubbed out. Its test image test_scripts/data/baboon.png scores
5.72957338 in MATLAB R2021a (BasicSR's docstring); pass it with --image.

Figures are NIQE on the MATLAB Y channel, crop_border 0.
"""
import importlib.util
import os
import sys
import time
import types
import warnings

from absl import app
from absl import flags
import numpy as np
import skimage.data

from dcsfn_jax.images import files as image_files
from dcsfn_jax.metrics import niqe

_PHOTOS = ('astronaut', 'camera', 'coffee', 'chelsea', 'rocket',
           'hubble_deep_field', 'retina', 'brick', 'grass', 'gravel', 'coins',
           'moon', 'page', 'text')

flags.DEFINE_string('basicsr_root', None, 'A BasicSR source checkout.')
flags.DEFINE_multi_string('image', [], 'More image files to score.')


def _load_basicsr(root):
  """BasicSR's calculate_niqe without importing torch-heavy packages."""
  def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

  sys.modules['cv2'] = types.ModuleType('cv2')
  for package in ('basicsr', 'basicsr.utils', 'basicsr.metrics'):
    stub = types.ModuleType(package)
    stub.__path__ = []
    sys.modules[package] = stub
  registry = types.ModuleType('basicsr.utils.registry')
  registry.METRIC_REGISTRY = types.SimpleNamespace(
      register=lambda: (lambda f: f))
  sys.modules['basicsr.utils.registry'] = registry
  base = os.path.join(root, 'basicsr')
  color = load('basicsr.utils.color_util',
               os.path.join(base, 'utils', 'color_util.py'))
  sys.modules['basicsr.utils'].bgr2ycbcr = color.bgr2ycbcr
  load('basicsr.metrics.metric_util',
       os.path.join(base, 'metrics', 'metric_util.py'))
  load('basicsr.utils.matlab_functions',
       os.path.join(base, 'utils', 'matlab_functions.py'))
  return load('basicsr.metrics.niqe',
              os.path.join(base, 'metrics', 'niqe.py')).calculate_niqe


def main(argv):
  del argv
  reference = (_load_basicsr(flags.FLAGS.basicsr_root)
               if flags.FLAGS.basicsr_root else None)
  inputs = [(name, getattr(skimage.data, name)()) for name in _PHOTOS]
  inputs += [(os.path.basename(path), image_files.read_image(path))
             for path in flags.FLAGS.image]
  print(f"{'image':20s} {'H x W':>11s} {'ours':>9s}"
        + (f" {'BasicSR':>9s} {'diff':>9s}" if reference else '')
        + f" {'seconds':>8s}")
  diffs = []
  for name, image in inputs:
    if image.ndim == 3:
      image = image[..., :3]
    start = time.time()
    ours = niqe.niqe(image, channel='y')
    seconds = time.time() - start
    line = f'{name:20s} {image.shape[0]:5d}x{image.shape[1]:<5d} {ours:9.5f}'
    if reference:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        theirs = float(np.squeeze(reference(
            (image[..., ::-1] if image.ndim == 3 else image).astype(
                np.float64), 0, input_order='HWC' if image.ndim == 3 else 'HW',
            convert_to='y')))
      diffs.append(abs(ours - theirs))
      line += f' {theirs:9.5f} {ours - theirs:+9.1e}'
    print(line + f' {seconds:8.2f}')
  if diffs:
    print(f'max |ours - BasicSR| = {max(diffs):.2e}, median '
          f'{np.median(diffs):.2e} over {len(diffs)} images')


if __name__ == '__main__':
  app.run(main)
