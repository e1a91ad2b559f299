"""The evaluator: per-image PSNR/SSIM under named protocols, on any split.

The big_vision shape: one jitted function gives every image's metrics and
their sums under the batch mask; the sums are added up (across processes
too) and divided once. The trainer's periodic eval, `python -m
dcsfn_jax.evaluate`, `python -m dcsfn_jax.score` and the notebook all run
this one loop.

Images run at their native size by default, so the figures are those of the
network itself (and, for 'official', of the released eval.py). `bucket=True`
pads them to a few shape buckets instead: fewer compilations, different
outputs (see `inference`).
"""
import dataclasses
import os
import time

import jax
from jax.experimental import multihost_utils
import numpy as np
import tqdm

from dcsfn_jax import checkpointing
from dcsfn_jax import data
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import paths
from dcsfn_jax.data import sources
from dcsfn_jax.inference import runner as runner_lib
from dcsfn_jax.evaluation import report


@dataclasses.dataclass
class Scored:
  """One evaluated image, handed to `Evaluator.run`'s `on_image`.

  rainy, clean: uint8 [H, W, 3] RGB as stored. derained: float32 [H, W, 3],
  the model's unclipped output, or the saved result being scored.
  """
  name: str
  rainy: np.ndarray
  clean: np.ndarray
  derained: np.ndarray
  metrics: dict


def check_pair(example, index):
  """ValueError naming the example when it cannot be scored."""
  name = example.get('name', index)
  if 'clean' not in example:
    raise ValueError(
        f'Example {name!r} has no clean image; evaluation needs a paired '
        'test set. For real rainy photos use '
        '`python -m dcsfn_jax.derain --niqe`.')
  if example['rainy'].shape != example['clean'].shape:
    raise ValueError(
        f"Example {name!r}: rainy {example['rainy'].shape} and clean "
        f"{example['clean'].shape} differ in shape.")


class Evaluator:
  """Scores a model (or saved outputs) on paired examples.

  One instance keeps its compilations: the trainer builds it once and calls
  `run` at every eval.
  """

  def __init__(self, model_config=None, *, protocols=metrics.PROTOCOLS,
               bucket=False, batch_size=None, self_ensemble=False,
               baseline=True, devices=None):
    """Args:
      model_config: the model to run; None scores examples that carry their
        own 'derained' uint8 image (`score`).
      protocols: names from metrics.PROTOCOLS.
      bucket: pad images to shape buckets instead of native sizes.
      batch_size: images per step (default one per device).
      self_ensemble: average the model over the 8 flips and rotations (8x
        the cost; `ensemble`).
      baseline: also score the rainy inputs ('PROTOCOL/psnr_rainy', ...).
      devices: the devices to run on (default: this process's); compile-only
        ones to lower `runner` ahead of time.
    """
    self.protocols = metrics.check_protocols(protocols)
    self.bucket = bucket
    self._granule = (1 if model_config is None
                     else models.minimum_size(model_config))
    forward = (None if model_config is None
               else runner_lib.forward_fn(model_config, self_ensemble,
                                          devices))
    self.self_ensemble = self_ensemble
    self.baseline = baseline

    def score_batch(params, batch):
      if forward is None:
        derained = batch['derained']
      else:
        derained = forward(params, batch)['derained']
      per_image = metrics.image_metrics(derained, batch['clean'],
                                        batch['sizes'],
                                        protocols=self.protocols)
      if not baseline:
        return {'derained': derained, 'per_image': per_image,
                'sums': metrics.metric_sums(per_image, batch['mask'])}
      # The rainy input's own scores: the baseline deraining must beat.
      for name, value in metrics.image_metrics(
          batch['rainy'], batch['clean'], batch['sizes'],
          protocols=self.protocols).items():
        per_image[name + '_rainy'] = value
      return {'derained': derained, 'per_image': per_image,
              'sums': metrics.metric_sums(per_image, batch['mask'])}

    self.runner = runner_lib.Runner(score_batch, batch_size=batch_size,
                                    devices=devices)

  @property
  def compilations(self):
    return self.runner.compilations

  def _batch(self, shape, examples):
    height, width = shape

    def stacked(key):
      return np.stack([runner_lib.pad_image(metrics.to_float(e[key]), height,
                                           width) for e in examples])

    batch = {'rainy': stacked('rainy'), 'clean': stacked('clean'),
             'sizes': np.array([e['rainy'].shape[:2] for e in examples],
                               np.int32),
             # The runner pads the batch with zeros, i.e. mask False.
             'mask': np.ones(len(examples), bool)}
    if 'derained' in examples[0]:
      batch['derained'] = stacked('derained')
    return batch

  def run(self, params, examples, *, on_image=None, progress=False,
          progress_label='evaluate', process_index=None, process_count=None):
    """Derains (unless scoring saved outputs) and scores every example.

    Args:
      params: model parameters (host arrays or replicated jax.Arrays; None
        without a model).
      examples: a sequence (len, [i]) of dicts with 'rainy' and 'clean'
        uint8 [H, W, 3] RGB, 'name', and without a model 'derained'.
      on_image: called with a `Scored` for each image, in order of
        completion (e.g. to write PNGs and panels).
      progress: show a progress bar of the images scored so far.
      progress_label: the bar's label (the command's name).
      process_index, process_count: this process's share of `examples` is
        every process_count-th from process_index (default: jax's); the sums
        are combined across processes, the rows are this process's.

    Returns:
      (rows, summary): one dict per image of this process, sorted by name
      (name, height, width, shape run at, 'PROTOCOL/psnr', 'PROTOCOL/ssim',
      'PROTOCOL/psnr_rainy', 'PROTOCOL/ssim_rainy'), and {'num_images',
      'means', 'protocols', 'bucket', 'shapes', 'compilations', 'devices',
      'batch_size'}.
    """
    process_index = (jax.process_index() if process_index is None
                     else process_index)
    process_count = (jax.process_count() if process_count is None
                     else process_count)
    share = sources.process_share(examples, process_index, process_count)
    placed = None if params is None else self.runner.place(params)
    rows, sums, pending = [], {}, {}
    bar = tqdm.tqdm(total=len(share), desc=progress_label, unit='image',
                    disable=not progress)

    def run_shape(shape, batch_examples):
      outputs = self.runner(placed, self._batch(shape, batch_examples))
      for name, total in outputs['sums'].items():
        sums[name] = sums.get(name, 0.0) + float(total)
      for i, example in enumerate(batch_examples):
        height, width = example['rainy'].shape[:2]
        values = {k: float(v[i]) for k, v in outputs['per_image'].items()}
        rows.append({'name': example['name'], 'height': height,
                     'width': width, 'shape': f'{shape[0]}x{shape[1]}',
                     **values})
        if on_image is not None:
          on_image(Scored(example['name'], example['rainy'], example['clean'],
                          outputs['derained'][i, :height, :width], values))
      bar.update(len(batch_examples))

    for index in range(len(share)):
      example = share[index]
      check_pair(example, index)
      shape = runner_lib.bucket_shape(*example['rainy'].shape[:2],
                                     self._granule, bucket=self.bucket)
      pending.setdefault(shape, []).append(example)
      if len(pending[shape]) == self.runner.batch_size:
        run_shape(shape, pending.pop(shape))
    for shape, batch_examples in pending.items():
      run_shape(shape, batch_examples)
    bar.close()

    # Every process reduces the same names, even one with no images.
    names = [f'{p}/{m}{rainy}' for p in self.protocols
             for m in ('psnr', 'ssim')
             for rainy in ('', '_rainy')[:2 if self.baseline else 1]]
    names.append('count')
    totals = np.array([sums.get(name, 0.0) for name in names], np.float64)
    if process_count > 1:
      totals = np.sum(multihost_utils.process_allgather(totals), axis=0)
    totals = dict(zip(names, totals.tolist()))
    count = totals.pop('count', 0.0)
    if not count:
      raise ValueError('No images to evaluate.')
    rows.sort(key=lambda row: row['name'])
    summary = {
        'num_images': int(count),
        'means': {name: total / count for name, total in totals.items()},
        'protocols': {p: metrics.PROTOCOL_DESCRIPTIONS[p]
                      for p in self.protocols},
        'bucket': self.bucket,
        'self_ensemble': self.self_ensemble,
        'rainy_baseline': self.baseline,
        'shapes': sorted({row['shape'] for row in rows}),
        'compilations': self.compilations,
        'devices': self.runner.mesh.devices.size,
        'batch_size': self.runner.batch_size,
    }
    return rows, summary


def evaluate_examples(params, model_config, examples, *,
                      protocols=metrics.PROTOCOLS, bucket=False,
                      batch_size=None, output_dir=None, panels=True,
                      progress=True, self_ensemble=False):
  """`Evaluator(...).run` in one call, writing PNGs and panels to
  `output_dir` when given; returns (rows, summary) as `Evaluator.run`."""
  on_image = (None if output_dir is None
              else report.ImageWriter(output_dir, panels=panels))
  return Evaluator(model_config, protocols=protocols, bucket=bucket,
                   batch_size=batch_size, self_ensemble=self_ensemble).run(
                       models.runtime_layout(params, model_config), examples,
                       on_image=on_image, progress=progress)


def default_output_dir(workdir, checkpoint, dataset, split):
  """WORKDIR/eval/DATASET-SPLIT for a training workdir; CHECKPOINT_eval/
  DATASET-SPLIT beside a checkpoint directory (never inside one that orbax
  manages)."""
  if os.path.abspath(checkpoint) == os.path.abspath(os.fspath(workdir)):
    return os.path.join(f'{checkpoint.rstrip(os.sep)}_eval',
                        f'{dataset}-{split}')
  return os.path.join(workdir, 'eval', f'{dataset}-{split}')


def evaluate_checkpoint(workdir, *, dataset=None, split=None, data_dir=None,
                        protocols=metrics.PROTOCOLS, bucket=False,
                        output_dir=None, prefer='latest', batch_size=None,
                        panels=True, limit=None, overwrite=False,
                        progress=True, weights='ema', self_ensemble=False):
  """Loads a checkpoint, evaluates it and writes the report.

  Args mirror the `evaluate` command's flags; `limit` is a positive count of
  leading images or None for all. Nothing is created before the checkpoint,
  the data and the flags have been checked, and an output folder this call
  created is removed again if the evaluation fails.

  Returns:
    The summary dict (also written to output_dir/summary.json).
  """
  protocols = metrics.check_protocols(protocols)
  if limit is not None and (isinstance(limit, bool) or limit < 1):
    raise ValueError(f'--limit={limit} must be a positive number of images '
                     '(leave it out to evaluate them all).')
  image_folders = report.IMAGE_FOLDERS if panels else ('derained',)
  if output_dir:  # checked before the (slow) checkpoint load
    paths.check_output_folder(paths.expand(output_dir), overwrite)
    report.check_replaceable(paths.expand(output_dir), overwrite,
                             image_folders)
  workdir = paths.expand(workdir)
  checkpoint = checkpointing.resolve(workdir, prefer=prefer)
  weights, weights_note = checkpointing.choose_weights(checkpoint, weights)
  params, config = checkpointing.load_pretrained(checkpoint, weights=weights)
  runner_lib.check_finite(params, checkpoint)
  dataset = dataset or config.get('dataset')
  split = split or config.get('eval_split') or 'test'
  data_dir = paths.expand(data_dir or config.get('data_dir')) or None
  if not dataset:
    raise ValueError(f'{checkpoint} records no dataset; pass --dataset.')
  output_dir = paths.expand(output_dir) or default_output_dir(
      workdir, checkpoint, dataset, split)
  paths.check_output_folder(output_dir, overwrite)
  report.check_replaceable(output_dir, overwrite, image_folders)
  source = data.load_split(dataset, split, data_dir)
  examples = source if limit is None else sources.first(source, limit)

  with paths.new_folder(output_dir):
    start = time.time()
    rows, summary = evaluate_examples(
        params, config.model, examples, protocols=protocols, bucket=bucket,
        batch_size=batch_size, output_dir=output_dir, panels=panels,
        progress=progress, self_ensemble=self_ensemble)
    summary.update({
        'checkpoint': checkpoint,
        'weights': weights,
        'weights_note': weights_note,
        'dataset': dataset,
        'split': split,
        'data_dir': data_dir,
        'channel_order': config.model.channel_order,
        'model': checkpointing.config_to_dict(config.model),
        'seconds': round(time.time() - start, 2),
        'output_dir': output_dir,
    })
    report.write_report(output_dir, rows, summary,
                        f'{dataset}/{split}, checkpoint {checkpoint}')
  return summary
