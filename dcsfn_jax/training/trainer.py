"""`train_and_evaluate`: DCSFN with the released recipe, from one CPU to many
hosts.

The story, top to bottom: take the workdir (`workdir`, one run at a time),
load and check the data, build the model, decide where the run starts
(`resume`: the workdir's newest intact checkpoint, else `config.init_from`,
else a fresh initialisation), then loop: step, log, evaluate, save, and stop
on a signal (`stopping`). The workdir receives checkpoints/, tensorboard/,
metrics.jsonl, panels/ (rainy | derained | clean | error at each eval) and
curves.png (`report`). It may be a URL such as gs://bucket/run.

One jitted step over a 1-D mesh of every device of every process: the state
is replicated, the batch split along 'data', the old state donated.
"""
import dataclasses
import time

from absl import logging
import jax
import numpy as np
import optax

from dcsfn_jax import checkpointing
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax.data import pipeline
from dcsfn_jax.evaluation import evaluator as evaluator_lib
from dcsfn_jax.images import panels as image_panels
from dcsfn_jax.training import config as config_lib
from dcsfn_jax.training import inputs
from dcsfn_jax.training import memory
from dcsfn_jax.training import report
from dcsfn_jax.training import resume
from dcsfn_jax.training import schedules
from dcsfn_jax.training import state as state_lib
from dcsfn_jax.training import stopping as stopping_lib
from dcsfn_jax.training import workdir as workdir_lib
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


def _collect_panels(count):
  """(on_image callback, list it fills with (name, panel)) for the first
  `count` images the evaluator scores."""
  panels = []

  def on_image(scored):
    if len(panels) < count:
      panels.append((scored.name, image_panels.evaluation_panel(
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


@dataclasses.dataclass(frozen=True)
class _Run:
  """What the loop reads and writes besides the state."""
  config: object
  total_steps: int
  mesh: object
  manager: object
  train_iter: object
  eval_source: object
  step_fn: object
  evaluator: object
  writer: object
  progress: object


class _Window:
  """The step metrics since the last log line, and how long they took."""

  def __init__(self):
    self.restart()

  def restart(self):
    """Forgets the steps so far; the clock starts now (eval time is not
    train time)."""
    self.metrics = []
    self.start = time.perf_counter()

  def summary(self, batch_size):
    """{'train/NAME': float} means over the window, with its throughput."""
    elapsed = time.perf_counter() - self.start
    summary = {f'train/{name}': float(np.mean([m[name] for m in self.metrics]))
               for name in ('loss', 'ssim', 'l1', 'grad_norm', 'param_norm')}
    summary['train/learning_rate'] = float(
        self.metrics[-1]['learning_rate'])
    summary['train/steps_per_second'] = len(self.metrics) / elapsed
    summary['train/images_per_second'] = (
        len(self.metrics) * batch_size / elapsed)
    return summary


def _check_finite(step_metrics, step, manager):
  """FloatingPointError, naming the last good checkpoint, on a non-finite
  loss or parameter."""
  if np.isfinite(step_metrics['loss']) and step_metrics['params_finite']:
    return
  checkpointing.wait(manager)  # the save in flight is the last good one
  last = checkpointing.newest_finished_step(manager)
  kept = (f'The last good checkpoint (step {last}) is kept in '
          f'{manager.directory}.' if last is not None else
          'No checkpoint had been written yet.')
  raise FloatingPointError(
      f'Non-finite training loss ({step_metrics["loss"]}) or parameters at '
      f'step {step}; stopped. {kept} Lower --config.learning_rate or check '
      'the data.')


def _out_of_memory(run, error):
  """ConfigError for XLA's RESOURCE_EXHAUSTED from the step, naming the
  fixes."""
  config, devices = run.config, run.mesh.devices.flat
  said = ' '.join(str(error).split())
  said = said if len(said) <= 160 else said[:157] + '...'
  return config_lib.ConfigError(
      f'the train step does not fit the memory of a {devices[0].device_kind} '
      f'at batch_size={config.batch_size} '
      f'({memory.images_per_device(config, len(devices))} per device; XLA: '
      f'{said}). Lower --config.batch_size, raise --config.grad_accum_steps, '
      'or set --config.model.remat=True; python -m dcsfn_jax.aot --target '
      'TARGET finds the largest batch that fits without the hardware.')


def _evaluate(run, state, step):
  """Scores the raw (and moving-average) params on the eval split, writes
  the figures and panels; returns the figures."""
  run.progress.write(f'step {step}: evaluating on {len(run.eval_source)} '
                     'images...')
  on_image, panels = _collect_panels(run.config.num_panels)
  eval_metrics = _eval_means(run.evaluator, state['params'], run.eval_source,
                             on_image)
  if 'ema_params' in state:
    ema_means = _eval_means(run.evaluator, state['ema_params'],
                            run.eval_source)
    eval_metrics.update(ema_psnr=ema_means['psnr'], ema_ssim=ema_means['ssim'])
  run.writer.scalars(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
  run.writer.panels(step, panels)
  run.progress.write(_eval_line(step, eval_metrics))
  return eval_metrics


def _save(run, state, step, eval_metrics=None):
  """Starts an asynchronous save of `step`; eval figures rank it."""
  params, ema_params, rest = resume.split_state(
      state_lib.checkpoint_layout(state))
  checkpointing.save(
      run.manager, step, params=params, train_state=rest,
      ema_params=ema_params, data_state=run.train_iter.get_state(),
      config=run.config,
      metrics={'psnr': eval_metrics['psnr']} if eval_metrics else None)


def _loop(run, state, start_step, stop):
  """Trains from `start_step` to run.total_steps; returns the last eval's
  figures. Raises `stopping.Interrupted` after saving, on a stop signal."""
  config, total_steps = run.config, run.total_steps
  window, eval_metrics = _Window(), {}
  for step in range(start_step + 1, total_steps + 1):
    # One optimiser update.
    batch = parallel.shard_batch(next(run.train_iter), run.mesh)
    try:
      state, step_metrics = run.step_fn(state, batch)
    except jax.errors.JaxRuntimeError as error:
      if 'RESOURCE_EXHAUSTED' not in str(error):
        raise
      raise _out_of_memory(run, error) from None
    step_metrics = jax.device_get(step_metrics)
    _check_finite(step_metrics, step, run.manager)
    window.metrics.append(step_metrics)
    run.progress.update(step, step_metrics)

    # Log the window's means.
    if is_due(step, config.log_every_steps, total_steps):
      summary = window.summary(config.batch_size)
      run.writer.scalars(step, summary)
      run.progress.log(step, summary)
      window.restart()

    # Evaluate, then save: eval steps carry the PSNR that ranks the best.
    is_eval = is_due(step, config.eval_every_steps, total_steps)
    if is_eval:
      eval_metrics = _evaluate(run, state, step)
      window.restart()
    stopping = stop.requested() and step < total_steps
    if is_eval or step % config.checkpoint_every_steps == 0 or stopping:
      _save(run, state, step, eval_metrics if is_eval else None)

    # Stop when asked, once the step is saved.
    if stopping:
      checkpointing.wait(run.manager)
      raise stopping_lib.Interrupted(step, stop.signum)
  return eval_metrics


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming if possible), evaluating as set.

  Returns:
    The last eval's means under the official protocol, {'psnr', 'ssim',
    'input_psnr', 'input_ssim', 'images', 'step'}, plus 'ema_psnr' and
    'ema_ssim' with config.ema_decay > 0. A run already at total_steps
    trains nothing and returns the figures metrics.jsonl holds.
  """
  config_lib.validate(config)
  workdir, created = workdir_lib.prepare(workdir)
  try:
    with workdir_lib.locked(workdir), stopping_lib.StopRequest() as stop:
      return _train(config, workdir, stop)
  except BaseException:
    if created:
      workdir_lib.remove_if_unused(workdir)
    raise


def _train(config, workdir, stop):
  # Data, model and optimiser; errors come before any compilation.
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
    init_params = resume.init_params_from(config, abstract_state['params'])

  # Where the run starts: the workdir's checkpoint, init_from, or afresh.
  manager = checkpointing.make_manager(workdir, keep=config.keep_checkpoints)
  try:
    state, data_state = resume.restore_or_init(
        config, workdir, manager, model, optimizer, mesh, abstract_state,
        init_params)
  except BaseException:
    manager.close()
    raise
  start_step = int(state['step'])
  if start_step >= total_steps:
    manager.close()
    return _already_done(workdir, start_step, total_steps)

  # The input pipeline, the jitted step and what reports on them.
  train_iter = pipeline.train_iterator(
      train_source, global_batch_size=config.batch_size,
      patch_size=config.patch_size, augment=config.augment, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  if data_state is not None:
    train_iter.set_state(data_state)
  logging.info('Training %s on %s/%s (%d pairs) for %d steps, batch %d over '
               '%d devices, from step %d.', config.dataset, config.dataset,
               config.train_split, len(train_source), total_steps,
               config.batch_size, jax.device_count(), start_step)
  run = _Run(
      config=config, total_steps=total_steps, mesh=mesh, manager=manager,
      train_iter=train_iter, eval_source=eval_source,
      step_fn=state_lib.make_train_step(model, optimizer, schedule, config,
                                        mesh),
      evaluator=evaluator_lib.Evaluator(config.model,
                                        protocols=(EVAL_PROTOCOL,)),
      writer=writer_lib.MetricWriter(workdir, start_step),
      progress=writer_lib.Progress(total_steps, start_step))

  # Train; whatever happens, the pending save finishes or is reported.
  try:
    eval_metrics = _loop(run, state, start_step, stop)
    checkpointing.wait(manager)
  finally:
    run.progress.close()
    checkpointing.close(manager)
    run.writer.close()
  if jax.process_index() == 0:
    report.write_curves(workdir)
  return {**eval_metrics, 'step': total_steps}


def _already_done(workdir, start_step, total_steps):
  """A finished run's figures from metrics.jsonl; ConfigError for a workdir
  beyond total_steps (nothing would train)."""
  if start_step > total_steps:
    raise config_lib.ConfigError(
        f'{workdir} is already at step {start_step}, beyond total_steps='
        f'{total_steps}; nothing was trained. Raise --config.total_steps to '
        'train on, or choose another --workdir.')
  logging.info('%s is already at total_steps=%d; nothing to train.', workdir,
               total_steps)
  if jax.process_index() == 0:
    report.write_curves(workdir)
  return {**report.last_eval(workdir), 'step': total_steps}
