r"""Derains your own photos with a trained or imported DCSFN.

  python -m dcsfn_jax.derain --workdir DIR --input PHOTO_OR_FOLDER \
      --output OUT [--tile 512] [--panels] [--niqe] [--overwrite]
  python -m dcsfn_jax.derain --torch-checkpoint latest_net --input ... \
      --output OUT

--workdir takes any project checkpoint (training workdir, step directory or
save_pretrained directory); --torch-checkpoint takes the released PyTorch
weights (or a .pth/.safetensors export) directly.

Any size and mode: gray, RGBA, palette, 16-bit and CMYK files are read as RGB,
camera JPEGs are turned upright by their EXIF orientation, and --tile N
processes photos larger than N pixels in overlapping N x N tiles blended
together, so memory stays bounded. Writes OUT/NAME.png (derained, 8-bit
RGB), with --panels OUT/panels/NAME.png (input | derained), and with --niqe
OUT/niqe.csv plus NIQE before/after on the terminal (Y channel, no border
crop; lower is more natural).

Unreadable files are reported by name and skipped; the rest continue, and the
exit status is non-zero with a summary. Existing outputs are never replaced
without --overwrite.
"""
import csv
import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
import tqdm

from dcsfn_jax import images
from dcsfn_jax import inference
from dcsfn_jax import models
from dcsfn_jax import niqe
from dcsfn_jax import parallel


@dataclasses.dataclass
class Result:
  """What happened to one input file."""
  path: str
  output: str = ''
  error: str = ''
  niqe_input: float | None = None
  niqe_output: float | None = None


def load_model(workdir=None, torch_checkpoint=None, preset='official',
               prefer='latest'):
  """(params, model_config) from a project checkpoint or PyTorch weights."""
  if (workdir is None) == (torch_checkpoint is None):
    raise ValueError('Pass exactly one of --workdir and --torch-checkpoint.')
  if workdir is not None:
    from dcsfn_jax import checkpointing  # pylint: disable=g-import-not-at-top
    params, config = checkpointing.load_pretrained(workdir, prefer=prefer)
    return params, config.model
  from dcsfn_jax import import_torch  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.export import convert  # pylint: disable=g-import-not-at-top
  state_dict, model_config = import_torch.read_torch_weights(torch_checkpoint)
  if model_config is None:
    model_config = models.preset(preset)
    model_config.channel_order = 'bgr'  # the released weights expect BGR
  return convert.from_torch_state_dict(state_dict, model_config), model_config


class Derainer:
  """Derains uint8 RGB photos of any size with one model."""

  def __init__(self, params, model_config, *, tile=None, overlap=None,
               batch_size=None):
    """Args:
      params, model_config: the model.
      tile: side of the tiles photos larger than this are cut into (None:
        whole photos, padded to shape buckets).
      overlap: overlap of neighbouring tiles (default tile // 4).
      batch_size: images or tiles per step (default one per device).
    """
    self.granule = models.minimum_size(model_config)
    if tile is not None:
      tile = max(self.granule, tile // self.granule * self.granule)
      overlap = tile // 4 if overlap is None else overlap
      if not 0 <= overlap < tile:
        raise ValueError(f'--tile_overlap={overlap} must be in [0, {tile}).')
    self.tile, self.overlap = tile, overlap
    self.runner = inference.Runner(
        inference.forward_fn(model_config),
        models.runtime_layout(params, model_config), batch_size=batch_size)

  def __call__(self, photo):
    """uint8 [H, W, 3] RGB -> derained float32 [H, W, 3] (unclipped)."""
    height, width = photo.shape[:2]
    rainy = images.to_float(photo)
    if self.tile is not None and max(height, width) > self.tile:
      padded = inference.pad_image(
          rainy, -(-height // self.granule) * self.granule,
          -(-width // self.granule) * self.granule)
      derained = inference.derain_tiled(self.runner, padded, self.tile,
                                        self.overlap, self.granule)
    else:
      bucket = inference.bucket_shape(height, width, self.granule)
      padded = inference.pad_image(rainy, *bucket)
      derained = self.runner({'rainy': padded[None]})['derained'][0]
    return derained[:height, :width]


def list_inputs(path):
  """The files to derain: `path` itself, or the visible files directly in
  the folder `path`, sorted."""
  path = os.fspath(path)
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    return sorted(os.path.join(path, name) for name in os.listdir(path)
                  if not name.startswith('.')
                  and os.path.isfile(os.path.join(path, name)))
  raise FileNotFoundError(f'--input {path}: no such file or folder.')


def _output_names(paths):
  """Output file names, unique even for photo.jpg next to photo.png."""
  stems = [images.output_name(os.path.basename(p)) for p in paths]
  return [images.output_name(os.path.basename(p).replace('.', '_'))
          if stems.count(stem) > 1 else stem
          for p, stem in zip(paths, stems)]


def derain_files(derainer, paths, output_dir, *, panels=False,
                 with_niqe=False, overwrite=False, progress=True):
  """Derains each file into output_dir; never raises for a bad file.

  Returns:
    list of Result, one per path, in order.
  """
  os.makedirs(output_dir, exist_ok=True)
  if panels:
    os.makedirs(os.path.join(output_dir, 'panels'), exist_ok=True)
  results = []
  for path, name in tqdm.tqdm(list(zip(paths, _output_names(paths))),
                              desc='derain', unit='photo',
                              disable=not progress):
    result = Result(path=path, output=os.path.join(output_dir, name))
    results.append(result)
    targets = [result.output] + (
        [os.path.join(output_dir, 'panels', name)] if panels else [])
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not overwrite:
      result.error = (f'{existing[0]} exists; pass --overwrite to replace '
                      'it.')
      continue
    try:
      photo = images.read_image(path)
    except images.UnreadableImageError as error:
      result.error = str(error)
      continue
    derained = images.to_uint8(derainer(photo))
    images.write_png(result.output, derained)
    if panels:
      images.write_png(targets[1], images.panel([photo, derained],
                                                ['input', 'derained']))
    if with_niqe:
      if min(photo.shape[:2]) >= niqe.BLOCK_SIZE:
        result.niqe_input = niqe.niqe(photo)
        result.niqe_output = niqe.niqe(derained)
  return results


def write_niqe_csv(path, results):
  with open(path, 'w', newline='') as file:
    writer = csv.writer(file)
    writer.writerow(['file', 'niqe_input', 'niqe_output'])
    for r in results:
      if not r.error:
        writer.writerow([os.path.basename(r.path),
                         '' if r.niqe_input is None else f'{r.niqe_input:.4f}',
                         '' if r.niqe_output is None
                         else f'{r.niqe_output:.4f}'])


def summarise(results, with_niqe):
  """Human-readable summary lines."""
  done = [r for r in results if not r.error]
  lines = [f'Derained {len(done)} of {len(results)} file(s).']
  if with_niqe:
    scored = [r for r in done if r.niqe_input is not None]
    for r in scored:
      lines.append(f'  NIQE {os.path.basename(r.path)}: '
                   f'{r.niqe_input:.4f} -> {r.niqe_output:.4f}')
    if scored:
      lines.append(
          f'  mean NIQE (channel y, crop_border 0): '
          f'{np.mean([r.niqe_input for r in scored]):.4f} -> '
          f'{np.mean([r.niqe_output for r in scored]):.4f} over '
          f'{len(scored)} photo(s)')
    if len(scored) < len(done):
      lines.append(f'  {len(done) - len(scored)} photo(s) under '
                   f'{niqe.BLOCK_SIZE}x{niqe.BLOCK_SIZE} px have no NIQE.')
  failed = [r for r in results if r.error]
  if failed:
    lines.append(f'{len(failed)} file(s) skipped:')
    lines.extend(f'  {r.error}' for r in failed)
  return lines


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Project checkpoint: training '
                      'workdir, step directory or save_pretrained directory.')
  flags.DEFINE_string('torch_checkpoint', None, 'Released PyTorch weights '
                      '(latest_net, net_N_epoch), .pth or .safetensors.')
  flags.DEFINE_alias('torch-checkpoint', 'torch_checkpoint')
  flags.DEFINE_enum('preset', 'official', ['official', 'paper'],
                    'Architecture of --torch-checkpoint weights.')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which checkpoint of a training workdir to use.')
  flags.DEFINE_string('input', None, 'A photo or a folder of photos.')
  flags.DEFINE_string('output', None, 'Folder for the derained PNGs.')
  flags.DEFINE_integer('tile', None, 'Cut photos larger than this many '
                       'pixels per side into overlapping tiles (bounded '
                       'memory); rounded down to the model\'s size step.')
  flags.DEFINE_integer('tile_overlap', None, 'Overlap of neighbouring '
                       'tiles in pixels (default tile/4).')
  flags.DEFINE_integer('batch_size', None, 'Tiles per step (default: one '
                       'per device).')
  flags.DEFINE_bool('panels', False, 'Also write input|derained panels.')
  flags.DEFINE_bool('niqe', False, 'Report NIQE before and after '
                    '(Y channel, crop_border 0) and write niqe.csv.')
  flags.DEFINE_bool('overwrite', False, 'Replace existing outputs.')
  flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  parallel.use_host_cores()
  if not f['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
  # These are the user's own photos: allow any size, beyond PIL's
  # decompression-bomb guard (178 megapixels).
  Image.MAX_IMAGE_PIXELS = None
  try:
    niqe_csv = os.path.join(f.output, 'niqe.csv')
    if f.niqe and os.path.exists(niqe_csv) and not f.overwrite:
      raise FileExistsError(f'{niqe_csv} exists; pass --overwrite to '
                            'replace it.')
    if f.tile is not None and f.tile < 1:
      raise ValueError(f'--tile={f.tile} must be a positive number of '
                       'pixels.')
    paths = list_inputs(f.input)
    if not paths:
      raise FileNotFoundError(f'--input {f.input} holds no files.')
    params, model_config = load_model(f.workdir, f.torch_checkpoint,
                                      f.preset, f.prefer)
    derainer = Derainer(params, model_config, tile=f.tile,
                        overlap=f.tile_overlap, batch_size=f.batch_size)
  except (ValueError, OSError, ImportError) as error:
    sys.exit(f'error: {error}')
  results = derain_files(derainer, paths, f.output, panels=f.panels,
                         with_niqe=f.niqe, overwrite=f.overwrite)
  if f.niqe:
    write_niqe_csv(niqe_csv, results)
  print('\n'.join(summarise(results, f.niqe)))
  if any(r.error for r in results):
    sys.exit(1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
