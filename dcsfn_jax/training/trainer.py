"""`train_and_evaluate`: DCSFN with the released recipe, from one CPU to many
hosts.

The run resumes by itself from the newest intact checkpoint in the workdir.
Otherwise it starts from `config.init_from` (any checkpoint, params only),
else from a fresh initialisation. The workdir receives checkpoints/,
tensorboard/, metrics.jsonl and panels/ (rainy | derained | clean | error at
each eval). It may be a URL such as gs://bucket/run.

One jitted step over a 1-D mesh of every device of every process: the state
is replicated, the batch split along 'data', the old state donated.
"""
import os
import socket
import time

from absl import logging
import jax
import numpy as np
import optax
import tqdm

from dcsfn_jax import checkpointing
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import paths
from dcsfn_jax.data import pipeline
from dcsfn_jax.evaluation import evaluator as evaluator_lib
from dcsfn_jax import images
from dcsfn_jax.training import config as config_lib
from dcsfn_jax.training import inputs
from dcsfn_jax.training import memory
from dcsfn_jax.training import schedules
from dcsfn_jax.training import state as state_lib
from dcsfn_jax.training import writer as writer_lib

# The protocol of the periodic eval (and of the best-checkpoint ranking).
EVAL_PROTOCOL = 'official'


def is_due(step, every, total_steps):
  """Whether a periodic action (log, eval, save) runs after `step`: every
  `every` steps and after the last one."""
  return step % every == 0 or step == total_steps


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


def _split_state(state):
  """(params, ema_params or None, the rest): a state as checkpoint items."""
  rest = {k: v for k, v in state.items()
          if k not in ('params', 'ema_params')}
  return state['params'], state.get('ema_params'), rest


def _abstract(tree, sharding):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      tree)


def _check_same_model(config, saved, workdir, step):
  """ConfigError naming the model fields that differ from the checkpoint's,
  or a moving average the checkpoint lacks (or holds and the run drops)."""
  if (saved.get('ema_decay', 0.0) > 0) != (config.ema_decay > 0):
    raise config_lib.ConfigError(
        f'{workdir} step {step} was trained with ema_decay='
        f'{saved.get("ema_decay", 0.0)}, the run asks for '
        f'{config.ema_decay}: a moving average cannot be added or dropped '
        f'mid-run. Resume with --config.ema_decay='
        f'{saved.get("ema_decay", 0.0)}, or start a new --workdir with '
        f'--config.init_from={workdir}.')
  differing = sorted(field for field in config.model.keys()
                     if field not in models.IMPLEMENTATION_FIELDS
                     and saved.model.get(field) != config.model[field])
  if not differing:
    return
  flags_back = ' '.join(f'--config.model.{field}={saved.model[field]}'
                        for field in differing)
  changes = ', '.join(f'{field}: checkpoint {saved.model[field]!r}, now '
                      f'{config.model[field]!r}' for field in differing)
  raise config_lib.ConfigError(
      f'{workdir} holds a run of another model at step {step} ({changes}). '
      f'Resume it with {flags_back}, or start a new --workdir with '
      f'--config.init_from={workdir} (params only, same model).')


def _check_same_layout(manager, step, abstract_rest, workdir):
  """ConfigError when the step is intact but holds another version's train
  state (not damage: nothing to set aside)."""
  try:
    saved = checkpointing.train_state_fields(manager, step)
  except Exception:  # pylint: disable=broad-except  # damaged metadata
    return
  if saved != set(abstract_rest):
    raise config_lib.ConfigError(
        f'{workdir} step {step} holds a train state with fields '
        f'{sorted(saved)}, written by another version of dcsfn_jax (this one '
        f'keeps {sorted(abstract_rest)}); it cannot be resumed. Start a new '
        f'--workdir with --config.init_from={workdir} (its parameters).')


def _restore_newest_intact(config, workdir, manager, abstract_state, mesh):
  """(state in checkpoint layout, data_state, step) from the newest step that
  restores; broken newer steps are set aside as STEP.corrupt with a warning.
  None when the workdir holds no checkpoint."""
  replicated = parallel.replicated(mesh)
  abstract_params, abstract_ema, abstract_rest = _split_state(abstract_state)
  broken = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      saved = checkpointing.read_config(manager, step)
    except Exception as error:  # pylint: disable=broad-except
      broken.append((step, error))
      continue
    _check_same_model(config, saved, workdir, step)
    try:
      restored = checkpointing.restore(
          manager, step,
          abstract_params=_abstract(abstract_params, replicated),
          abstract_train_state=_abstract(abstract_rest, replicated),
          abstract_ema_params=(None if abstract_ema is None
                               else _abstract(abstract_ema, replicated)))
    except Exception as error:  # pylint: disable=broad-except
      _check_same_layout(manager, step, abstract_rest, workdir)
      broken.append((step, error))
      continue
    for bad_step, error in broken:
      aside = checkpointing.set_aside(manager, bad_step)
      logging.warning('Checkpoint step %d in %s is damaged (%s: %s); moved '
                      'it to %s and resumed from step %d.', bad_step,
                      manager.directory, type(error).__name__,
                      str(error).splitlines()[0][:200], aside, step)
    state = {'params': restored['params'], **restored['train_state']}
    if restored['ema_params'] is not None:
      state['ema_params'] = restored['ema_params']
    return state, restored['data_state'], step
  if broken:
    raise config_lib.ConfigError(
        f'No checkpoint in {manager.directory} can be read (steps '
        f'{[s for s, _ in broken]} are damaged: {broken[0][1]!s:.200}); '
        'remove that folder to start afresh, or choose another --workdir.')
  return None


def _init_params_from(config, abstract_params):
  """Host params of `config.init_from`, checked against the run's model."""
  source = paths.expand(config.init_from)
  try:
    params, source_config = checkpointing.load_pretrained(source)
  except FileNotFoundError as error:
    raise config_lib.ConfigError(f'init_from={config.init_from}: {error}') \
        from None
  if source_config.model.channel_order != config.model.channel_order:
    raise config_lib.ConfigError(
        f'init_from={config.init_from} holds a model with channel_order='
        f'{source_config.model.channel_order!r}; set '
        f'--config.model.channel_order={source_config.model.channel_order}.')
  expected = jax.tree.map(lambda x: (x.shape, x.dtype), abstract_params)
  got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
  if expected != got:
    raise config_lib.ConfigError(
        f'init_from={config.init_from} does not fit config.model: its '
        f'model config is {source_config.model.to_dict()}, the run\'s is '
        f'{config.model.to_dict()}.')
  logging.info('Initialising params from %s.', source)
  return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


def restore_or_init(config, workdir, manager, model, optimizer, mesh,
                    abstract_state, init_params=None):
  """Resume order: workdir checkpoint, then `init_params` (read from
  config.init_from by `_init_params_from`), then a fresh init.

  `abstract_state` is `state_lib.abstract_train_state` of the run. Returns
  (state in `models.runtime_layout`, replicated over `mesh`; data_state or
  None).
  """
  ema = config.ema_decay > 0
  resumed = _restore_newest_intact(config, workdir, manager, abstract_state,
                                   mesh)
  if resumed is not None:
    state, data_state, step = resumed
    logging.info('Resuming from %s step %d.', workdir, step)
    state = state_lib.checkpoint_layout(state)
    return (parallel.replicate(models.runtime_layout(state, model),
                               mesh), data_state)
  state = state_lib.create_train_state(model, optimizer, config.patch_size,
                                       jax.random.key(config.seed), ema=ema)
  if init_params is not None:
    state['params'] = models.runtime_layout(init_params, model)
    if ema:
      state['ema_params'] = models.runtime_layout(init_params, model)
  return parallel.replicate(state, mesh), None


def _collect_panels(count):
  """(on_image callback, list it fills with (name, panel)) for the first
  `count` images the evaluator scores."""
  panels = []

  def on_image(scored):
    if len(panels) < count:
      panels.append((scored.name, images.evaluation_panel(
          scored.rainy, metrics.to_uint8(scored.derained), scored.clean)))

  return on_image, panels


def _eval_means(evaluator, params, eval_source, on_image=None):
  """{'psnr', 'ssim', 'input_psnr', 'input_ssim', 'images'} under the eval
  protocol."""
  _, result = evaluator.run(params, eval_source, on_image=on_image)
  means = result['means']
  return {'psnr': means[f'{EVAL_PROTOCOL}/psnr'],
          'ssim': means[f'{EVAL_PROTOCOL}/ssim'],
          'input_psnr': means[f'{EVAL_PROTOCOL}/psnr_rainy'],
          'input_ssim': means[f'{EVAL_PROTOCOL}/ssim_rainy'],
          'images': result['num_images']}


def _eval_line(step, means):
  line = (f'step {step}: eval PSNR {means["psnr"]:.2f} dB, SSIM '
          f'{means["ssim"]:.4f}')
  if 'ema_psnr' in means:
    line += f' (EMA {means["ema_psnr"]:.2f} dB, {means["ema_ssim"]:.4f})'
  return (line + f'; inputs {means["input_psnr"]:.2f} dB, '
          f'{means["input_ssim"]:.4f}; {EVAL_PROTOCOL} protocol, '
          f'{means["images"]} images')


def _prepare_workdir(workdir):
  """The workdir as an epath.Path, created; ConfigError when it cannot be.
  Returns (path, whether this call created it)."""
  path = checkpointing.as_path(paths.expand(workdir))
  if path.exists() and not path.is_dir():
    raise config_lib.ConfigError(f'--workdir {workdir} is a file; choose a '
                                 'folder for the run.')
  created = not path.exists()
  try:
    path.mkdir(parents=True, exist_ok=True)
    # One probe per process: the processes of a run share the workdir.
    probe = path / f'.write_test.{socket.gethostname()}.{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as error:
    raise config_lib.ConfigError(
        f'--workdir {workdir} is not writable ({error.strerror or error}); '
        'choose another folder.') from None
  return path, created


def _remove_if_unused(path):
  """Removes a workdir this run created but never wrote into."""
  try:
    if path.is_dir() and not any(path.iterdir()):
      path.rmdir()
  except OSError:
    pass


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming if possible), evaluating as set.

  Returns:
    The last eval's means under the official protocol, {'psnr', 'ssim',
    'input_psnr', 'input_ssim', 'images', 'step'}, plus 'ema_psnr' and
    'ema_ssim' with config.ema_decay > 0.
  """
  config_lib.validate(config)
  workdir, created = _prepare_workdir(workdir)
  try:
    return _train(config, workdir)
  except BaseException:
    if created:
      _remove_if_unused(workdir)
    raise


def _train(config, workdir):
  train_source, eval_source = inputs.load_sources(config)
  inputs.check_against_data(config, train_source, eval_source)
  total_steps, schedule = _schedule(config, len(train_source))
  mesh = parallel.make_mesh()
  model_config, remat_message = memory.resolve_remat(config,
                                                     mesh.devices.flat)
  logging.info('%s.', remat_message)
  model = models.build_model(model_config)
  optimizer = optax.adam(schedule)
  # Read before anything is written, so that a bad init_from leaves no trace.
  abstract_state = state_lib.abstract_train_state(
      model, optimizer, config.patch_size, ema=config.ema_decay > 0)
  init_params = None
  if config.init_from:
    init_params = _init_params_from(config, abstract_state['params'])
  manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    state, data_state = restore_or_init(config, workdir, manager, model,
                                        optimizer, mesh, abstract_state,
                                        init_params)
  except BaseException:
    manager.close()
    raise
  start_step = int(state['step'])

  train_iter = pipeline.train_iterator(
      train_source, global_batch_size=config.batch_size,
      patch_size=config.patch_size, augment=config.augment, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  if data_state is not None:
    train_iter.set_state(data_state)

  step_fn = state_lib.make_train_step(model, optimizer, schedule, config,
                                      mesh)
  evaluator = evaluator_lib.Evaluator(config.model,
                                      protocols=(EVAL_PROTOCOL,))
  writer = writer_lib.MetricWriter(workdir, start_step)
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
        kept = (f'The last good checkpoint (step {last}) is kept in '
                f'{manager.directory}.' if last is not None else
                'No checkpoint had been written yet.')
        raise FloatingPointError(
            f'Non-finite training loss ({step_metrics["loss"]}) or parameters '
            f'at step {step}; stopped. {kept} Lower --config.learning_rate '
            'or check the data.')
      window.append(step_metrics)
      progress.update(1)
      progress.set_postfix(loss=f'{step_metrics["loss"]:.4f}',
                           lr=f'{step_metrics["learning_rate"]:.1e}')

      if is_due(step, config.log_every_steps, total_steps):
        elapsed = time.perf_counter() - window_start
        summary = {f'train/{name}': float(np.mean([m[name] for m in window]))
                   for name in ('loss', 'ssim', 'l1', 'grad_norm',
                                'param_norm')}
        summary['train/learning_rate'] = float(
            step_metrics['learning_rate'])
        summary['train/steps_per_second'] = len(window) / elapsed
        summary['train/images_per_second'] = (
            len(window) * config.batch_size / elapsed)
        writer.scalars(step, summary)
        window = []
        window_start = time.perf_counter()

      is_eval = is_due(step, config.eval_every_steps, total_steps)
      if is_eval:
        on_image, panels = _collect_panels(config.num_panels)
        eval_metrics = _eval_means(evaluator, state['params'], eval_source,
                                   on_image)
        if 'ema_params' in state:
          ema_means = _eval_means(evaluator, state['ema_params'], eval_source)
          eval_metrics.update(ema_psnr=ema_means['psnr'],
                              ema_ssim=ema_means['ssim'])
        writer.scalars(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
        writer.panels(step, panels)
        progress.write(_eval_line(step, eval_metrics))
        window_start = time.perf_counter()  # eval time is not train time
      if is_eval or step % config.checkpoint_every_steps == 0:
        params, ema_params, rest = _split_state(
            state_lib.checkpoint_layout(state))
        checkpointing.save(
            manager, step, params=params, train_state=rest,
            ema_params=ema_params, data_state=train_iter.get_state(),
            config=config,
            metrics={'psnr': eval_metrics['psnr']} if is_eval else None)
  finally:
    progress.close()
    manager.wait_until_finished()
    manager.close()
    writer.close()
  return {**eval_metrics, 'step': total_steps}
