"""Derains your own photos with a trained or imported DCSFN.

Any size and mode: gray, RGBA, palette, 16-bit and CMYK files are read as
RGB, and camera JPEGs are turned upright by their EXIF orientation. Each photo
runs at its native size, so the PNG is the network's own output (rounded);
`bucket` pads to shape buckets instead (fewer compilations, different
outputs), and `tile` cuts photos larger than the tile into overlapping tiles
blended together, so memory stays bounded.

A user's files are never touched: the output folder may not be, lie inside or
contain the input folder; no output is written over an input of the same
run; and `overwrite` replaces only PNGs this project wrote
(`paths.refusal_to_replace`).
"""
import csv
import dataclasses
import errno
import os

from absl import logging
import numpy as np
import tqdm

from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import paths
from dcsfn_jax.images import files as image_files
from dcsfn_jax.images import panels as image_panels
from dcsfn_jax.inference import runner as runner_lib
from dcsfn_jax.metrics import niqe

# Photos above this many pixels are refused unless the flag is raised. With
# --tile, memory stays bounded up to it (derain --tile 512 of a 50 MP photo:
# 1.4 GB peak RSS on CPU).
DEFAULT_MAX_PIXELS = 50_000_000

NIQE_CSV = 'niqe.csv'
_NIQE_HEADER = ['file', 'niqe_input', 'niqe_output']


@dataclasses.dataclass
class Result:
  """What happened to one input file."""
  path: str
  output: str = ''
  error: str = ''
  note: str = ''  # e.g. a photo padded up to the network's minimum size
  niqe_input: float | None = None
  niqe_output: float | None = None


def load_model(workdir=None, torch_checkpoint=None, preset='official',
               prefer='latest', notes=None, weights='ema'):
  """(params, model_config) from a project checkpoint or PyTorch weights.

  notes: a list that gets a line to show the user: which weights of a
  project checkpoint were used, or a 'note:' for each assumption made
  (weights that record no model config are taken as the authors' BGR
  release).
  weights: 'ema' or 'raw', see `checkpointing.choose_weights`.
  """
  if (workdir is None) == (torch_checkpoint is None):
    raise ValueError('Pass exactly one of --workdir and --torch-checkpoint.')
  if workdir is not None:
    from dcsfn_jax import checkpointing  # pylint: disable=g-import-not-at-top
    workdir = paths.expand(workdir)
    weights, note = checkpointing.choose_weights(workdir, weights, prefer)
    if notes is not None:
      notes.append(note)
    params, config = checkpointing.load_pretrained(workdir, prefer, weights)
    runner_lib.check_finite(params, workdir)
    return params, config.model
  # Imported here: only this path needs torch or safetensors.
  from dcsfn_jax.pytorch import convert  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.pytorch import torch_files  # pylint: disable=g-import-not-at-top
  torch_checkpoint = paths.expand(torch_checkpoint)
  state_dict, model_config = torch_files.read_torch_weights(torch_checkpoint)
  if model_config is None:
    model_config = torch_files.released_model_config(preset)
    note = (f'note: {torch_checkpoint}: channel_order=\'bgr\' '
            f'({torch_files.released_assumption(preset)}).')
    logging.warning('%s', note)
    if notes is not None:
      notes.append(note)
    fits = f'does not fit the {preset!r} preset (pass --preset?)'
  else:
    fits = 'does not fit the model config it records'
  try:
    models.validate(model_config)
    params = convert.from_torch_state_dict(state_dict, model_config)
  except (ValueError, KeyError, TypeError) as error:
    raise ValueError(f'{torch_checkpoint} {fits}: {error}') from None
  runner_lib.check_finite(params, torch_checkpoint)
  return params, model_config


class Derainer:
  """Derains uint8 RGB photos of any size with one model."""

  def __init__(self, params, model_config, *, tile=None, overlap=None,
               batch_size=None, bucket=False, self_ensemble=False):
    """Args:
      params, model_config: the model.
      tile: side of the tiles photos larger than this are cut into (None:
        whole photos).
      overlap: overlap of neighbouring tiles (default tile // 4).
      batch_size: images or tiles per step (default one per device).
      bucket: pad whole photos to shape buckets instead of native sizes.
      self_ensemble: average over the 8 flips and rotations (8x the cost).
    """
    self.granule = models.minimum_size(model_config)
    if tile is not None:
      if tile < 1:
        raise ValueError(f'--tile={tile} must be a positive number of '
                         'pixels.')
      tile = max(self.granule, tile // self.granule * self.granule)
      overlap = tile // 4 if overlap is None else overlap
      if not 0 <= overlap < tile:
        raise ValueError(f'--tile_overlap={overlap} must be in [0, {tile}).')
    self.tile, self.overlap, self.bucket = tile, overlap, bucket
    self.runner = runner_lib.Runner(runner_lib.forward_fn(model_config,
                                                        self_ensemble),
                                   batch_size=batch_size)
    self._params = self.runner.place(
        models.runtime_layout(params, model_config))

  def __call__(self, photo):
    """uint8 [H, W, 3] RGB -> derained float32 [H, W, 3] (unclipped)."""
    height, width = photo.shape[:2]
    if self.tile is not None and max(height, width) > self.tile:
      # Padded as uint8 and converted tile by tile: host memory stays near
      # one float32 copy of the photo (the blended output).
      padded = runner_lib.pad_image(
          np.asarray(photo, np.uint8),
          -(-height // self.granule) * self.granule,
          -(-width // self.granule) * self.granule)
      derained = runner_lib.derain_tiled(self.runner, self._params, padded,
                                        self.tile, self.overlap, self.granule)
    else:
      shape = runner_lib.bucket_shape(height, width, self.granule,
                                     bucket=self.bucket)
      padded = runner_lib.pad_image(metrics.to_float(photo), *shape)
      derained = self.runner(self._params,
                             {'rainy': padded[None]})['derained'][0]
    return derained[:height, :width]


def list_inputs(path):
  """The files to derain: `path` itself, or the visible files directly in
  the folder `path`, sorted."""
  path = paths.expand(os.fspath(path))
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    names = sorted(name for name in os.listdir(path)
                   if not name.startswith('.')
                   and os.path.isfile(os.path.join(path, name)))
    if not names:
      raise FileNotFoundError(f'--input {path} holds no files.')
    return [os.path.join(path, name) for name in names]
  raise FileNotFoundError(f'--input {path}: no such file or folder.')


def _png_name(name):
  """image_files.output_name, or 'photo.png' for a name with no usable
  stem."""
  try:
    return image_files.output_name(name)
  except ValueError:
    return 'photo.png'


def output_names(input_paths):
  """A distinct output PNG name for every input, for any set of names.

  A photo keeps its stem (IMG_1.jpg -> IMG_1.png) unless another input
  would get the same name; those are told apart by their suffix (x.jpg ->
  x_jpg.png), then by a count, never reusing a name another input has. Names
  are compared ignoring case, as on macOS and Windows file systems.
  """
  bases = [os.path.basename(os.fspath(p)) for p in input_paths]
  plain = [_png_name(base) for base in bases]
  counts = {}
  for name in plain:
    counts[name.lower()] = counts.get(name.lower(), 0) + 1
  # Names used as they are; a renamed input never takes one of these.
  taken = {name.lower() for name in plain if counts[name.lower()] == 1}
  names = []
  for base, name in zip(bases, plain):
    if counts[name.lower()] > 1:
      candidate = _png_name(base.replace('.', '_'))
      stem, number = candidate[:-len('.png')], 1
      while candidate.lower() in taken:
        number += 1
        candidate = f'{stem}_{number}.png'
      taken.add(candidate.lower())
      name = candidate
    names.append(name)
  return names


def _real(path):
  return os.path.normcase(os.path.realpath(path))


def _within(path, folder):
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_location(input_path, output_dir):
  """Raises ValueError/OSError, before any work, for an --output that could
  touch the inputs or cannot be written."""
  output_dir = paths.expand(os.fspath(output_dir))
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise NotADirectoryError(f'--output {output_dir} is a file; choose a '
                             'folder for the derained PNGs.')
  input_path = paths.expand(os.fspath(input_path))
  if os.path.isdir(input_path):
    source, target = _real(input_path), _real(output_dir)
    if _within(target, source) or _within(source, target):
      raise ValueError(
          f'--output {output_dir} is, lies inside or contains the --input '
          f'folder {input_path}; choose a folder outside it, e.g. '
          f'{input_path.rstrip(os.sep)}_derained.')
  existing = output_dir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing) or '.'
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise PermissionError(f'--output {output_dir} cannot be created: '
                          f'{existing} is not a writable folder.')
  paths.check_writable(output_dir)


def _identity(path):
  """(device, inode) of an existing file, else None."""
  try:
    stat = os.stat(path)
  except OSError:
    return None
  return stat.st_dev, stat.st_ino


def _refusal(target, inputs, overwrite):
  """Why `target` may not be written, or ''. inputs: the real paths and
  (device, inode) pairs of this run's inputs."""
  if _real(target) in inputs or _identity(target) in inputs:
    return (f'{target} is an input of this run; it is never written over. '
            'Choose another --output.')
  return paths.refusal_to_replace(target, overwrite,
                                  image_files.is_our_output)


def _to_uint8(image, rows=256):
  """metrics.to_uint8 a few rows at a time (bounded temporaries)."""
  pixels = np.empty(image.shape, np.uint8)
  for top in range(0, image.shape[0], rows):
    pixels[top:top + rows] = metrics.to_uint8(image[top:top + rows])
  return pixels


def _write_outputs(result, targets, photo, derained):
  """Writes the derained PNG (and the panel when targets has two paths); a
  failure becomes result.error."""
  target = targets[0]
  try:
    os.makedirs(os.path.dirname(target) or '.', exist_ok=True)
    image_files.write_png(target, derained)
    if len(targets) > 1:
      target = targets[1]
      os.makedirs(os.path.dirname(target), exist_ok=True)
      image_files.write_png(target, image_panels.panel(
          [photo, derained], ['input', 'derained']))
  except OSError as error:
    if error.errno == errno.ENAMETOOLONG:
      result.error = (f'{result.path}: the output name derived from it, '
                      f'{os.path.basename(target)}, is too long for the '
                      'file system of --output; rename the input.')
    else:
      result.error = (f'{result.path}: cannot write {target} '
                      f'({error.strerror or error}); check --output.')


def derain_files(derainer, input_paths, output_dir, *, panels=False,
                 with_niqe=False, overwrite=False,
                 max_pixels=DEFAULT_MAX_PIXELS, progress=True):
  """Derains each file into output_dir; never raises for a bad file.

  A photo above `max_pixels` (0: no limit) is refused from its header,
  before it is decoded (`images.files.read_image`).

  Returns:
    list of Result, one per path, in order; a Result with `error` was not
    written.
  """
  output_dir = os.fspath(output_dir)
  inputs = ({_real(path) for path in input_paths}
            | {_identity(path) for path in input_paths}) - {None}
  results = []
  for path, name in tqdm.tqdm(list(zip(input_paths,
                                       output_names(input_paths))),
                              desc='derain', unit='photo',
                              disable=not progress):
    result = Result(path=path, output=os.path.join(output_dir, name))
    results.append(result)
    targets = [result.output] + (
        [os.path.join(output_dir, 'panels', name)] if panels else [])
    refusals = [r for r in (_refusal(t, inputs, overwrite) for t in targets)
                if r]
    if refusals:
      result.error = refusals[0]
      continue
    try:
      photo = image_files.read_image(path, max_pixels=max_pixels)
    except image_files.TooManyPixelsError as error:
      width, height = error.size
      result.error = (f'{path}: {width}x{height} is {error.megapixels:.1f} '
                      f'megapixels, above --max_pixels={max_pixels}; raise '
                      '--max_pixels (with --tile to bound memory) to derain '
                      'it.')
      continue
    except image_files.UnreadableImageError as error:
      result.error = str(error)
      continue
    height, width = photo.shape[:2]
    if min(height, width) < derainer.granule:
      result.note = (f'{path}: {width}x{height} is below the network\'s '
                     f'{derainer.granule} px minimum; it was padded by '
                     'reflection and cropped back.')
    derained = _to_uint8(derainer(photo))
    _write_outputs(result, targets, photo, derained)
    if result.error:
      continue
    if with_niqe and min(photo.shape[:2]) >= niqe.BLOCK_SIZE:
      result.niqe_input = niqe.niqe(photo)
      result.niqe_output = niqe.niqe(derained)
  return results


def check_niqe_csv(output_dir, overwrite):
  """Raises FileExistsError when niqe.csv may not be written."""
  refusal = paths.refusal_to_replace(
      os.path.join(output_dir, NIQE_CSV), overwrite,
      paths.starts_with(','.join(_NIQE_HEADER)))
  if refusal:
    raise FileExistsError(refusal)


def write_niqe_csv(output_dir, results):
  """output_dir/niqe.csv: each derained file's NIQE before and after.

  Raises:
    OSError: naming the file, when it cannot be written.
  """
  path = os.path.join(output_dir, NIQE_CSV)
  try:
    with open(path, 'w', newline='') as file:
      writer = csv.writer(file)
      writer.writerow(_NIQE_HEADER)
      for r in results:
        if not r.error:
          writer.writerow([
              os.path.basename(r.path),
              '' if r.niqe_input is None else f'{r.niqe_input:.4f}',
              '' if r.niqe_output is None else f'{r.niqe_output:.4f}'])
  except OSError as error:
    raise OSError(f'cannot write {NIQE_CSV} in {output_dir} '
                  f'({error.strerror or error}).') from None


def failures(results):
  """One line for a run with skipped files: how many, which (up to three),
  and where the reasons are."""
  failed = [os.path.basename(r.path) for r in results if r.error]
  shown = ', '.join(failed[:3]) + (f' and {len(failed) - 3} more'
                                   if len(failed) > 3 else '')
  return (f'{len(failed)} of {len(results)} file(s) not derained ({shown}); '
          'the summary above says why and what to do for each.')


def summarise(results, with_niqe, output_dir):
  """Human-readable summary lines: what was derained, where it went, NIQE,
  and what was skipped and why."""
  done = [r for r in results if not r.error]
  lines = [f'Derained {len(done)} of {len(results)} file(s).']
  if done:
    lines.append(f'  outputs in {output_dir}')
  lines.extend(f'  note: {r.note}' for r in done if r.note)
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
