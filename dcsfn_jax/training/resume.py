"""Where a run starts from: the workdir's newest intact checkpoint, else
`config.init_from` (parameters only), else a fresh initialisation.

Each refusal is a `config.ConfigError` of one line that names the workdir or
source, what differs, and the flags that resume it or start afresh. A step
that fails to restore is damaged: once an older step restores, the newer
broken ones are set aside as STEP.corrupt (renamed, never deleted).
"""
from absl import logging
import jax
import numpy as np

from dcsfn_jax import checkpointing
from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import paths
from dcsfn_jax.training import config as config_lib
from dcsfn_jax.training import state as state_lib


def split_state(state):
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
  abstract_params, abstract_ema, abstract_rest = split_state(abstract_state)
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


def init_params_from(config, abstract_params):
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
  config.init_from by `init_params_from`), then a fresh init.

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
