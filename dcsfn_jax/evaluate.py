r"""Evaluates a checkpoint on a paired test set under named PSNR/SSIM protocols.

  python -m dcsfn_jax.evaluate --workdir DIR [--dataset rain100h --split test] \
      [--protocol official,y_uint8] [--exact] [--output DIR]

DIR is a training workdir (latest checkpoint, or --prefer=best), one step
directory, or a save_pretrained directory such as one written by
`python -m dcsfn_jax.import_torch` from the released PyTorch weights.
Dataset, split and data_dir default to those the checkpoint was trained with.

Writes to --output (default DIR/eval/DATASET-SPLIT for a training workdir,
DIR_eval/DATASET-SPLIT beside a checkpoint directory):
  per_image.csv   every image's size and metrics under each protocol
  summary.json    means, protocol definitions, checkpoint and settings
  results.md      a Markdown table naming each protocol
  derained/*.png  outputs rounded to uint8 (what y_uint8 scores)
  panels/*.png    rainy | derained | clean | error map

Images are padded to a few shape buckets and cropped back, so a test set of
many sizes compiles a handful of times; --exact runs each image at its native
size like the released eval.py (batch 1, no padding), which the 'official'
figures need to equal that script's output for the same weights.
"""
import csv
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from dcsfn_jax import checkpointing
from dcsfn_jax import images
from dcsfn_jax import inference
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import parallel


def _eval_fn(model_config, protocols):
  forward = inference.forward_fn(model_config)

  def evaluate_batch(params, batch):
    derained = forward(params, batch)['derained']
    per_image = metrics.image_metrics(derained, batch['clean'],
                                      batch['sizes'], protocols=protocols)
    # The rainy input's own scores: the baseline deraining must beat.
    for name, value in metrics.image_metrics(
        batch['rainy'], batch['clean'], batch['sizes'],
        protocols=protocols).items():
      per_image[name + '_rainy'] = value
    return {'derained': derained, 'per_image': per_image,
            'sums': metrics.metric_sums(per_image, batch['mask'])}

  return evaluate_batch


def evaluate_examples(params, model_config, examples, *,
                      protocols=metrics.PROTOCOLS, exact=False,
                      batch_size=None, output_dir=None, panels=True,
                      progress=True):
  """Derains and scores every example.

  Args:
    params: model parameters.
    model_config: the model config they belong to.
    examples: a sequence (len, [i]) of dicts with 'rainy' and 'clean' uint8
      [H, W, 3] RGB and 'name', e.g. `dcsfn_jax.data.load_split(...)`.
    protocols: names from metrics.PROTOCOLS.
    exact: run at native sizes instead of shape buckets.
    batch_size: images per step (default one per device).
    output_dir: where derained PNGs and panels go (None: not written).
    panels: also write panels when output_dir is given.
    progress: show a progress bar.

  Returns:
    (rows, summary): one dict per image (name, height, width, bucket,
    'PROTOCOL/psnr', 'PROTOCOL/ssim' and the rainy input's own
    'PROTOCOL/psnr_rainy', 'PROTOCOL/ssim_rainy'), and a dict with the mean
    of each metric, the count, the buckets used and the number of
    compilations.
  """
  protocols = metrics.check_protocols(protocols)
  granule = models.minimum_size(model_config)
  runner = inference.Runner(_eval_fn(model_config, protocols),
                            models.runtime_layout(params, model_config),
                            batch_size=batch_size)
  if output_dir is not None:
    os.makedirs(os.path.join(output_dir, 'derained'), exist_ok=True)
    if panels:
      os.makedirs(os.path.join(output_dir, 'panels'), exist_ok=True)

  rows = []
  sums = {}
  pending = {}  # bucket shape -> examples waiting for a full batch

  def run(bucket, batch_examples):
    height, width = bucket
    batch = {
        'rainy': np.stack([inference.pad_image(images.to_float(e['rainy']),
                                               height, width)
                           for e in batch_examples]),
        'clean': np.stack([inference.pad_image(images.to_float(e['clean']),
                                               height, width)
                           for e in batch_examples]),
        'sizes': np.array([e['rainy'].shape[:2] for e in batch_examples],
                          np.int32),
        # The runner pads the batch with zeros, i.e. mask False.
        'mask': np.ones(len(batch_examples), bool),
    }
    outputs = runner(batch)
    for name, total in outputs['sums'].items():
      sums[name] = sums.get(name, 0.0) + float(total)
    for i, example in enumerate(batch_examples):
      h, w = example['rainy'].shape[:2]
      row = {'name': example['name'], 'height': h, 'width': w,
             'bucket': f'{height}x{width}'}
      row.update({k: float(v[i]) for k, v in outputs['per_image'].items()})
      rows.append(row)
      if output_dir is not None:
        _write_outputs(output_dir, example, outputs['derained'][i, :h, :w],
                       panels)

  for index in tqdm.trange(len(examples), desc='evaluate', unit='image',
                           disable=not progress):
    example = examples[index]
    if 'clean' not in example:
      raise ValueError(
          f"Example {example.get('name', index)!r} has no clean image; "
          'evaluate needs a paired test set. For real rainy photos use '
          '`python -m dcsfn_jax.derain --niqe`.')
    if example['rainy'].shape != example['clean'].shape:
      raise ValueError(
          f"Example {example['name']!r}: rainy {example['rainy'].shape} and "
          f"clean {example['clean'].shape} differ in shape.")
    bucket = inference.bucket_shape(*example['rainy'].shape[:2], granule,
                                    exact=exact)
    pending.setdefault(bucket, []).append(example)
    if len(pending[bucket]) == runner.batch_size:
      run(bucket, pending.pop(bucket))
  for bucket, batch_examples in pending.items():
    run(bucket, batch_examples)

  count = sums.pop('count', 0.0)
  if not count:
    raise ValueError('No images to evaluate.')
  rows.sort(key=lambda row: row['name'])
  summary = {
      'num_images': int(count),
      'means': {name: total / count for name, total in sums.items()},
      'protocols': {p: metrics.PROTOCOL_DESCRIPTIONS[p] for p in protocols},
      'exact': exact,
      'buckets': sorted({row['bucket'] for row in rows}),
      'compilations': runner.compilations,
      'devices': runner.mesh.devices.size,
      'batch_size': runner.batch_size,
  }
  return rows, summary


def _write_outputs(output_dir, example, derained, panels):
  name = images.output_name(example['name'])
  derained_uint8 = images.to_uint8(derained)
  images.write_png(os.path.join(output_dir, 'derained', name), derained_uint8)
  if panels:
    error = images.error_map(images.to_float(derained_uint8),
                             images.to_float(example['clean']))
    images.write_png(
        os.path.join(output_dir, 'panels', name),
        images.panel([example['rainy'], derained_uint8, example['clean'],
                      error],
                     ['rainy', 'derained', 'clean',
                      f'mean |error| (yellow = {images.ERROR_MAP_FULL_SCALE:g})']))


def markdown_table(summary, title):
  """The summary's means as a Markdown table, one row per protocol."""
  lines = [f'### {title}', '',
           f"{summary['num_images']} images, "
           + ('native sizes (--exact)' if summary['exact']
              else f"padded to buckets {', '.join(summary['buckets'])}")
           + '.', '',
           '| protocol | PSNR (dB) | SSIM | rainy input PSNR / SSIM '
           '| definition |',
           '| --- | ---: | ---: | ---: | --- |']
  means = summary['means']
  for protocol, description in summary['protocols'].items():
    lines.append(f"| {protocol} | {means[protocol + '/psnr']:.4f} "
                 f"| {means[protocol + '/ssim']:.4f} "
                 f"| {means[protocol + '/psnr_rainy']:.2f} / "
                 f"{means[protocol + '/ssim_rainy']:.4f} "
                 f'| {description} |')
  return '\n'.join(lines) + '\n'


def write_report(output_dir, rows, summary, protocols):
  """Writes per_image.csv, summary.json and results.md into output_dir."""
  columns = ['name', 'height', 'width', 'bucket'] + [
      f'{p}/{m}' for p in protocols
      for m in ('psnr', 'ssim', 'psnr_rainy', 'ssim_rainy')]
  with open(os.path.join(output_dir, 'per_image.csv'), 'w',
            newline='') as file:
    writer = csv.DictWriter(file, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: (f'{v:.6f}' if isinstance(v, float) else v)
                       for k, v in row.items()})
  with open(os.path.join(output_dir, 'summary.json'), 'w') as file:
    json.dump(summary, file, indent=2, default=str)
  title = (f"{summary.get('dataset', '?')}/{summary.get('split', '?')}, "
           f"checkpoint {summary.get('checkpoint', '?')}")
  with open(os.path.join(output_dir, 'results.md'), 'w') as file:
    file.write(markdown_table(summary, title))


def evaluate_checkpoint(workdir, *, dataset=None, split=None, data_dir=None,
                        protocols=metrics.PROTOCOLS, exact=False,
                        output_dir=None, prefer='latest', batch_size=None,
                        panels=True, limit=None, overwrite=False,
                        progress=True):
  """Loads a checkpoint, evaluates it and writes the report.

  Returns:
    The summary dict (also written to output_dir/summary.json).
  """
  # Imported here so that the metrics and panels work without tfds.
  from dcsfn_jax import data  # pylint: disable=g-import-not-at-top

  protocols = metrics.check_protocols(protocols)
  checkpoint = checkpointing.resolve(workdir, prefer=prefer)
  params, config = checkpointing.load_pretrained(checkpoint)
  dataset = dataset or config.get('dataset')
  split = split or config.get('eval_split') or 'test'
  data_dir = data_dir or config.get('data_dir')
  if not dataset:
    raise ValueError(f'{checkpoint} records no dataset; pass --dataset.')
  if output_dir is None:
    # Never write inside a checkpoint directory that orbax manages.
    is_checkpoint = checkpoint == os.path.abspath(os.fspath(workdir))
    output_dir = os.path.join(
        f'{checkpoint.rstrip(os.sep)}_eval' if is_checkpoint else workdir,
        *([] if is_checkpoint else ['eval']), f'{dataset}-{split}')
  if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
    raise FileExistsError(f'{output_dir} is not empty; pass --overwrite or '
                          'choose another --output.')
  os.makedirs(output_dir, exist_ok=True)

  source = data.load_split(dataset, split, data_dir)
  examples = _Limited(source, limit) if limit else source
  start = time.time()
  rows, summary = evaluate_examples(
      params, config.model, examples, protocols=protocols, exact=exact,
      batch_size=batch_size, output_dir=output_dir, panels=panels,
      progress=progress)
  summary.update({
      'checkpoint': checkpoint,
      'dataset': dataset,
      'split': split,
      'data_dir': None if data_dir is None else os.fspath(data_dir),
      'channel_order': config.model.channel_order,
      'model': json.loads(ml_collections.ConfigDict(
          config.model).to_json_best_effort()),
      'seconds': round(time.time() - start, 2),
      'output_dir': output_dir,
  })
  write_report(output_dir, rows, summary, protocols)
  return summary


class _Limited:
  """The first `limit` examples of a source."""

  def __init__(self, source, limit):
    self._source, self._length = source, min(limit, len(source))

  def __len__(self):
    return self._length

  def __getitem__(self, index):
    if not 0 <= index < self._length:
      raise IndexError(index)
    return self._source[index]


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Training workdir, checkpoint step '
                      'directory or save_pretrained directory.')
  flags.DEFINE_enum('prefer', 'latest', ['latest', 'best'],
                    'Which checkpoint of a training workdir to evaluate.')
  flags.DEFINE_string('dataset', None, 'tfds config name, e.g. rain100h '
                      '(default: the checkpoint config\'s dataset).')
  flags.DEFINE_string('split', None, 'Split to evaluate (default: the '
                      'config\'s eval_split, else test).')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: the '
                      'config\'s data_dir).')
  flags.DEFINE_list('protocol', list(metrics.PROTOCOLS),
                    'Comma-separated protocols: official (released eval.py: '
                    'RGB, float, zero-padded SSIM) and/or y_uint8 (MATLAB '
                    'evaluate_PSNR_SSIM.m: uint8, Y, valid SSIM).')
  flags.DEFINE_bool('exact', False, 'Run each image at its native size (one '
                    'compilation per size) instead of padded shape buckets; '
                    'needed for released eval.py parity.')
  flags.DEFINE_string('output', None, 'Output directory (default: '
                      'WORKDIR/eval/DATASET-SPLIT, or CHECKPOINT_eval/'
                      'DATASET-SPLIT for a checkpoint directory).')
  flags.DEFINE_integer('batch_size', None, 'Images per step (default: one '
                       'per device).')
  flags.DEFINE_bool('panels', True, 'Write rainy|derained|clean|error '
                    'panels.')
  flags.DEFINE_integer('limit', None, 'Evaluate only the first N images.')
  flags.DEFINE_bool('overwrite', False, 'Write into a non-empty --output.')
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  parallel.use_host_cores()
  if not f['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO
  try:
    summary = evaluate_checkpoint(
        f.workdir, dataset=f.dataset, split=f.split, data_dir=f.data_dir,
        protocols=f.protocol, exact=f.exact, output_dir=f.output,
        prefer=f.prefer, batch_size=f.batch_size, panels=f.panels,
        limit=f.limit, overwrite=f.overwrite)
  except (ValueError, OSError) as error:
    sys.exit(f'error: {error}')
  print(markdown_table(summary, f"{summary['dataset']}/{summary['split']}"))
  print(f"{summary['compilations']} compilation(s) on "
        f"{jax.device_count()} device(s), {summary['seconds']} s; results in "
        f"{summary['output_dir']}")


if __name__ == '__main__':
  _define_flags()
  app.run(main)
