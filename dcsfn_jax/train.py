r"""Trains DCSFN with the released recipe, from one CPU to many hosts.

  python -m dcsfn_jax.train --config configs/demo.py --workdir /tmp/demo
  python -m dcsfn_jax.train --config configs/rain100h.py:paper \
      --workdir runs/rain100h_paper --config.batch_size=16

The run resumes by itself from the newest checkpoint in --workdir. Otherwise
it starts from --config.init_from (any checkpoint, params only), else from a
fresh initialisation. The workdir receives checkpoints/, tensorboard/,
metrics.jsonl and panels/ (rainy | derained | clean at each eval). It may be
a URL such as gs://bucket/run (with gcsfs and google-cloud-storage installed).

One jitted step over a 1-D mesh of every device of every process: the state
is replicated, the batch split along 'data', the old state donated.
"""
import functools
import json
import logging as std_logging
import os
import socket
import time
import zlib

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np
import optax
from PIL import Image
import tensorboardX
import tqdm

from dcsfn_jax import checkpointing
from dcsfn_jax import data
from dcsfn_jax import losses
from dcsfn_jax import metrics as metrics_lib
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import schedules
from dcsfn_jax import train_config
from dcsfn_jax.data import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training config file, optionally with a variant: '
    'configs/rain100h.py:paper. Override fields with --config.FIELD=VALUE.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory (or URL, e.g. gs://bucket/run) for '
    'checkpoints, logs and panels; a run resumes from the newest checkpoint '
    'found here.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 for a multi-process '
    'run (default $JAX_COORDINATOR_ADDRESS, or SLURM/TPU auto-detection).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes in a multi-process run '
    '(default $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process, 0..num_processes-1 '
    '(default $JAX_PROCESS_ID).')


def _schedule(config, num_pairs):
  """(total_steps, learning-rate schedule) for a split of `num_pairs`."""
  if config.total_steps == -1:
    total, milestones = schedules.released_steps(config.epochs, num_pairs,
                                                 config.batch_size)
  else:
    total = config.total_steps
    milestones = schedules.milestones_at_fractions(total)
  return total, schedules.multistep_lr(config.learning_rate, milestones,
                                       config.lr_decay_factor)


def _check_against_data(config, train_source, eval_source):
  """Errors, before any compilation, for what the data makes impossible."""
  devices, processes = jax.device_count(), jax.process_count()
  if config.batch_size % devices:
    raise train_config.ConfigError(
        f'batch_size={config.batch_size} is not divisible by the {devices} '
        f'devices; use a multiple of {devices}, e.g. '
        f'--config.batch_size={devices * max(1, config.batch_size // devices)}.')
  if config.batch_size % processes:
    raise train_config.ConfigError(
        f'batch_size={config.batch_size} is not divisible by the '
                     f'{processes} processes.')
  if len(train_source) < config.batch_size:
    raise train_config.ConfigError(
        f'{config.dataset}/{config.train_split} has {len(train_source)} '
        f'pairs, fewer than batch_size={config.batch_size}; every batch drops '
        'the remainder, so nothing would train.')
  if len(eval_source) == 0:
    raise train_config.ConfigError(
        f'{config.dataset}/{config.eval_split} is empty.')
  # Sizes of the first images only: checking all would decode the whole split.
  smallest = min(min(train_source[i]['height'], train_source[i]['width'])
                 for i in range(min(len(train_source), 16)))
  if smallest < config.patch_size:
    raise train_config.ConfigError(
        f'patch_size={config.patch_size} is larger than the images of '
        f'{config.dataset}/{config.train_split} ({smallest} px on their short '
        f'side); use --config.patch_size={smallest} or less.')


def _load_split(config, split):
  try:
    return data.load_split(config.dataset, split, config.data_dir or None)
  except data.DatasetNotPreparedError:
    raise
  except ValueError as error:  # e.g. a split the dataset lacks
    raise train_config.ConfigError(str(error)) from error


def _is_prepared(config):
  try:
    _load_split(config, config.train_split)
  except data.DatasetNotPreparedError:
    return False
  return True


def _prepare(config):
  logging.info('Preparing %s in %s on process %d.', config.dataset,
               config.data_dir or 'the default data_dir', jax.process_index())
  data.prepare(config.dataset, data_dir=config.data_dir or None)


def _prepare_where_missing(config):
  """Builds synthetic_rain for every process that cannot read it.

  Process 0 builds first, alone, so a data_dir that all hosts share is
  written once. Then, while some process still lacks the data (a node-local
  data_dir), the first such process on each host builds it: one per host at a
  time, since two builds into one directory would clobber each other. The
  dataset depends only on its default options and seed, so every host holds
  the same pairs. Every process takes part in the collectives.
  """
  if jax.process_index() == 0 and not _is_prepared(config):
    _prepare(config)
  if jax.process_count() == 1:
    return
  multihost_utils.sync_global_devices('synthetic_rain built by process 0')
  host = zlib.crc32(socket.gethostname().encode()) & 0x7FFFFFFF
  for _ in range(jax.process_count()):
    lacking = multihost_utils.process_allgather(
        np.asarray([not _is_prepared(config), host], np.int32))
    first_lacking_per_host = {}
    for index, (missing, host_id) in enumerate(lacking.tolist()):
      if missing:
        first_lacking_per_host.setdefault(host_id, index)
    if not first_lacking_per_host:
      return
    if jax.process_index() in first_lacking_per_host.values():
      _prepare(config)
    multihost_utils.sync_global_devices('synthetic_rain built on each host')


def _load_sources(config):
  """(train, eval) random-access sources; builds synthetic_rain if asked."""
  if config.prepare_data:
    _prepare_where_missing(config)
  train_source = _load_split(config, config.train_split)
  eval_source = _load_split(config, config.eval_split)
  if config.eval_max_images != -1:
    eval_source = _Head(eval_source, config.eval_max_images)
  return train_source, eval_source


class _Head:
  """The first `count` examples of a random-access source."""

  def __init__(self, source, count):
    self._source = source
    self._count = min(count, len(source))

  def __len__(self):
    return self._count

  def __getitem__(self, index):
    if not 0 <= index < self._count:
      raise IndexError(index)
    return self._source[index]


def checkpoint_layout(tree):
  """A host copy of the replicated `tree` with per-block names (canonical).

  Copies (never views) each array, so a later donated step cannot touch what
  an asynchronous save is still writing.
  """
  return models.unstack_blocks(jax.tree.map(
      lambda x: np.array(x.addressable_data(0)), tree))


def create_train_state(model, optimizer, patch_size, root_key):
  """The train state: params, optimiser state, step, RNG key data.

  Params and optimiser moments are in `models.runtime_layout` (with
  scan_blocks: 324 stacked tensors instead of 4,098 per-block ones, so the
  Adam update compiles in seconds); checkpoints hold them per block
  (`checkpoint_layout`). Params are drawn on the host (`models.init_params`),
  deterministic in `root_key`: a jitted `model.init` compiles one random
  kernel per tensor, which for the official preset's 4,098 tensors took more
  than 9 minutes on 2 CPU cores.
  Not jittable; use `abstract_train_state` for shapes.
  """
  init_key, train_key = jax.random.split(root_key)
  params = models.runtime_layout(
      models.init_params(model, init_key, (1, patch_size, patch_size, 3)),
      model.config)
  return {'params': params,
          'opt_state': optimizer.init(params),
          'step': jnp.zeros((), jnp.int32),
          'rng': jax.random.key_data(train_key)}


def abstract_train_state(model, optimizer, patch_size):
  """Shapes and dtypes of `create_train_state`'s result in the checkpoint
  (canonical) layout, without computing it."""
  def init(key):
    params = model.init(key, jnp.zeros((1, patch_size, patch_size, 3),
                                       jnp.float32))['params']
    return {'params': params,
            'opt_state': models.unstack_blocks(
                optimizer.init(models.runtime_layout(params, model.config))),
            'step': jnp.zeros((), jnp.int32),
            'rng': jax.random.key_data(key)}
  return jax.eval_shape(init, jax.random.key(0))


def _concatenated(tree):
  """Every leaf of `tree` raveled into one vector: reductions over it compile
  as one kernel rather than one per leaf (~4 s less for the official preset)."""
  return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def train_step(state, batch, *, model, optimizer, schedule, config):
  """One Adam update on a global batch {'rainy', 'clean'}: [B, P, P, 3]."""
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state['rng']),
                                state['step'])

  def loss_fn(params):
    derained = model.apply({'params': params}, batch['rainy'],
                           rngs={'dropout': step_key})
    return losses.derain_loss(derained, batch['clean'],
                              ssim_padding=config.ssim_padding,
                              l1_weight=config.l1_weight)

  (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state['params'])
  updates, opt_state = optimizer.update(grads, state['opt_state'],
                                        state['params'])
  params = optax.apply_updates(state['params'], updates)
  flat_params = _concatenated(params)
  step_metrics = {'loss': loss, **parts,
                  'grad_norm': jnp.linalg.norm(_concatenated(grads)),
                  'param_norm': jnp.linalg.norm(flat_params),
                  'learning_rate': schedule(state['step']),
                  'params_finite': jnp.all(jnp.isfinite(flat_params))}
  new_state = {'params': params, 'opt_state': opt_state,
               'step': state['step'] + 1, 'rng': state['rng']}
  return new_state, step_metrics


def make_train_step(model, optimizer, schedule, config, mesh):
  """`train_step` jitted over `mesh`: state replicated and donated, batch
  split along 'data'. (state, global batch) -> (state, metrics)."""
  replicated = parallel.replicated(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, optimizer=optimizer,
                        schedule=schedule, config=config),
      in_shardings=(replicated, parallel.batch_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))


def _split_state(state):
  return state['params'], {k: v for k, v in state.items() if k != 'params'}


def _abstract(tree, sharding):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


def _restore_or_init(config, workdir, manager, model, init_fn, abstract_state,
                     mesh):
  """Resume order: workdir checkpoint, then config.init_from, then init.

  `abstract_state` is in the checkpoint layout; the state returned is in
  `models.runtime_layout`. Returns (state, data_state or None).
  """
  replicated = parallel.replicated(mesh)
  step = manager.latest_step()
  if step is not None:
    logging.info('Resuming from %s step %d.', workdir, step)
    abstract_params, abstract_rest = _split_state(abstract_state)
    restored = checkpointing.restore(
        manager, step,
        abstract_params=_abstract(abstract_params, replicated),
        abstract_train_state=_abstract(abstract_rest, replicated))
    state = checkpoint_layout(
        {'params': restored['params'], **restored['train_state']})
    return (parallel.replicate(models.runtime_layout(state, model.config),
                               mesh), restored['data_state'])
  state = parallel.replicate(init_fn(), mesh)
  if config.init_from:
    params, source_config = checkpointing.load_pretrained(config.init_from)
    if source_config.model.channel_order != config.model.channel_order:
      raise train_config.ConfigError(
          f'init_from={config.init_from} holds a model with channel_order='
          f'{source_config.model.channel_order!r}; set '
          f'--config.model.channel_order={source_config.model.channel_order}.')
    expected = jax.tree.map(lambda x: (x.shape, x.dtype), abstract_state[
        'params'])
    got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
    if expected != got:
      raise train_config.ConfigError(
          f'init_from={config.init_from} does not fit config.model: its '
          f'model config is {source_config.model.to_dict()}, the run\'s is '
          f'{config.model.to_dict()}.')
    logging.info('Initialising params from %s.', config.init_from)
    state['params'] = parallel.replicate(models.runtime_layout(
        jax.tree.map(lambda x: np.asarray(x, np.float32), params),
        model.config), mesh)
  return state, None


def _panel(rainy, derained, clean):
  """uint8 [H, 3W, 3]: rainy | derained (clipped) | clean."""
  row = np.concatenate([rainy, np.clip(derained, 0.0, 1.0), clean], axis=1)
  return np.round(row * 255.0).astype(np.uint8)


def _eval_fn(model):
  """Jitted (params, rainy, clean) -> (derained, output metrics, input metrics)
  for one image [1, H, W, 3], official protocol."""

  def run(params, rainy, clean):
    derained = model.apply({'params': params}, rainy)
    return (derained, metrics_lib.official_metrics(derained, clean),
            metrics_lib.official_metrics(rainy, clean))

  return jax.jit(run)


def evaluate(eval_fn, params, eval_source, *, num_panels=0):
  """Official-protocol PSNR/SSIM of the model, and of the rainy inputs.

  Args:
    eval_fn: from `_eval_fn`.
    params: parameters on one local device.
    eval_source: random-access source of the eval split; each process takes
      its share and the sums are combined.
    num_panels: how many panels (this process's first images) to return.

  Returns:
    ({'psnr', 'ssim', 'input_psnr', 'input_ssim', 'images'},
     [(name, uint8 panel [H, 3W, 3])]).
  """
  sums = np.zeros(5)
  panels = []
  for example in pipeline.eval_iterator(
      eval_source, process_index=jax.process_index(),
      process_count=jax.process_count()):
    rainy, clean = example['rainy'][None], example['clean'][None]
    derained, output, baseline = jax.device_get(eval_fn(params, rainy, clean))
    sums += [output['psnr'][0], output['ssim'][0], baseline['psnr'][0],
             baseline['ssim'][0], 1]
    if len(panels) < num_panels:
      panels.append((example['name'], _panel(rainy[0], derained[0], clean[0])))
  if jax.process_count() > 1:
    sums = np.sum(multihost_utils.process_allgather(sums), axis=0)
  count = max(sums[4], 1)
  names = ('psnr', 'ssim', 'input_psnr', 'input_ssim')
  result = {name: float(total / count) for name, total in zip(names, sums)}
  result['images'] = int(sums[4])
  return result, panels


class _Logger:
  """metrics.jsonl, TensorBoard and panels, written by process 0 only.

  The workdir may be an epath.Path to an object store (gs://), where files
  cannot be appended to: metrics.jsonl is kept in memory and rewritten whole
  at each write, through a temporary file and a rename so that a kill
  mid-write never truncates it. A resumed run keeps the lines of the steps
  its checkpoint holds and drops those of the steps it is about to redo.
  """

  def __init__(self, workdir, start_step):
    self._active = jax.process_index() == 0
    self._workdir = workdir
    self._jsonl = workdir / 'metrics.jsonl'
    if self._active:
      self._lines = []
      if self._jsonl.exists():
        self._lines = [line + '\n' for line in
                       self._jsonl.read_text().splitlines()
                       if line and json.loads(line)['step'] <= start_step]
      self._writer = tensorboardX.SummaryWriter(
          os.fspath(workdir / 'tensorboard'))

  def scalars(self, step, values):
    if not self._active:
      return
    for name, value in values.items():
      self._writer.add_scalar(name, value, step)
    self._lines.append(json.dumps({'step': step, **values}) + '\n')
    partial = self._jsonl.with_name(self._jsonl.name + '.tmp')
    partial.write_text(''.join(self._lines))
    partial.replace(self._jsonl)

  def panels(self, step, panels):
    if not self._active:
      return
    folder = self._workdir / 'panels'
    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, panel) in enumerate(panels):
      stem = os.path.splitext(os.path.basename(name))[0]
      with (folder / f'step{step:07d}_{stem}.png').open('wb') as file:
        Image.fromarray(panel).save(file, format='PNG')
      self._writer.add_image(f'eval/panel_{index}', panel, step,
                             dataformats='HWC')
    self._writer.flush()

  def close(self):
    if self._active:
      self._writer.close()


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming if possible), evaluating as set.

  `workdir` is a local path or a URL that etils.epath, orbax and tensorboardX
  write to (gs://bucket/run; GCS needs gcsfs and google-cloud-storage).

  Returns:
    The last eval metrics (official protocol): 'psnr', 'ssim', 'input_psnr',
    'input_ssim', 'images', plus 'step'.
  """
  train_config.validate(config)
  workdir = checkpointing.as_path(workdir)  # local or a URL such as gs://
  workdir.mkdir(parents=True, exist_ok=True)
  train_source, eval_source = _load_sources(config)
  _check_against_data(config, train_source, eval_source)
  total_steps, schedule = _schedule(config, len(train_source))

  mesh = parallel.make_mesh()
  model = models.build_model(config.model)
  optimizer = optax.adam(schedule)
  init_fn = lambda: create_train_state(model, optimizer, config.patch_size,
                                jax.random.key(config.seed))
  manager = checkpointing.make_manager(
      workdir, save_interval_steps=1, keep=config.keep_checkpoints)
  state, data_state = _restore_or_init(
      config, workdir, manager, model, init_fn,
      abstract_train_state(model, optimizer, config.patch_size), mesh)
  start_step = int(state['step'])

  train_iter = pipeline.train_iterator(
      train_source, global_batch_size=config.batch_size,
      patch_size=config.patch_size, augment=config.augment, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  if data_state is not None:
    train_iter.set_state(data_state)

  step_fn = make_train_step(model, optimizer, schedule, config, mesh)
  eval_fn = _eval_fn(model)

  logger = _Logger(workdir, start_step)
  logging.info('Training %s on %s/%s (%d pairs) for %d steps, batch %d over '
               '%d devices, from step %d.', config.dataset, config.dataset,
               config.train_split, len(train_source), total_steps,
               config.batch_size, jax.device_count(), start_step)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                       desc='train', disable=jax.process_index() != 0,
                       dynamic_ncols=True)
  window = []
  window_start = time.perf_counter()
  eval_metrics = {}
  try:
    for step in range(start_step + 1, total_steps + 1):
      batch = parallel.shard_batch(next(train_iter), mesh)
      state, step_metrics = step_fn(state, batch)
      step_metrics = jax.device_get(step_metrics)
      if not (np.isfinite(step_metrics['loss'])
              and step_metrics['params_finite']):
        last = manager.latest_step()
        raise FloatingPointError(
            f'Non-finite training loss ({step_metrics["loss"]}) or parameters '
            f'at step {step}; stopped. The last good checkpoint '
            f'(step {last}) is kept in {manager.directory}. Lower '
            '--config.learning_rate or check the data.')
      window.append(step_metrics)
      progress.update(1)
      progress.set_postfix(loss=f'{step_metrics["loss"]:.4f}',
                           lr=f'{step_metrics["learning_rate"]:.1e}')

      if step % config.log_every_steps == 0 or step == total_steps:
        elapsed = time.perf_counter() - window_start
        summary = {f'train/{name}': float(np.mean([m[name] for m in window]))
                   for name in ('loss', 'ssim', 'l1', 'grad_norm',
                                'param_norm')}
        summary['train/learning_rate'] = float(
            step_metrics['learning_rate'])
        summary['train/steps_per_second'] = len(window) / elapsed
        summary['train/images_per_second'] = (
            len(window) * config.batch_size / elapsed)
        logger.scalars(step, summary)
        window = []
        window_start = time.perf_counter()

      is_eval = step % config.eval_every_steps == 0 or step == total_steps
      if is_eval:
        local_params = jax.tree.map(lambda x: x.addressable_data(0),
                                    state['params'])
        eval_metrics, panels = evaluate(eval_fn, local_params, eval_source,
                                        num_panels=config.num_panels)
        logger.scalars(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
        logger.panels(step, panels)
        progress.write(
            f'step {step}: eval PSNR {eval_metrics["psnr"]:.2f} dB, SSIM '
            f'{eval_metrics["ssim"]:.4f} (inputs {eval_metrics["input_psnr"]:.2f}'
            f' dB, {eval_metrics["input_ssim"]:.4f}; official protocol, '
            f'{eval_metrics["images"]} images)')
        window_start = time.perf_counter()  # eval time is not train time
      if (is_eval or step % config.checkpoint_every_steps == 0):
        params, rest = _split_state(checkpoint_layout(state))
        checkpointing.save(
            manager, step, params=params, train_state=rest,
            data_state=train_iter.get_state(), config=config,
            metrics={'psnr': eval_metrics['psnr']} if is_eval else None,
            force=True)
  finally:
    progress.close()
    manager.wait_until_finished()
    manager.close()
    logger.close()
  return {**eval_metrics, 'step': total_steps}


class _HideOrbaxInfo(std_logging.Filter):
  """Drops orbax's per-save INFO lines, which would bury the progress bar."""

  def filter(self, record):
    return (record.levelno >= std_logging.WARNING
            or f'{os.sep}orbax{os.sep}' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_HideOrbaxInfo())
  parallel.use_host_cores(_CONFIG.value.batch_size)
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  try:
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (train_config.ConfigError, data.DatasetNotPreparedError,
          data.DatasetLayoutError, FloatingPointError) as error:
    raise SystemExit(f'error: {error}') from error
  logging.info('Done: %s', result)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
