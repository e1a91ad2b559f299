"""A thin orbax wrapper: training checkpoints and standalone inference ones.

Layouts (every directory below is one orbax composite checkpoint):
  WORKDIR/checkpoints/STEP/   items 'params', 'ema_params' (with
                              config.ema_decay > 0), 'train_state' (step,
                              opt_state), 'data_iterator' (JSON), 'config'
                              (JSON); written by `make_manager` + `save`.
  PRETRAINED_DIR/             items 'params' and 'config'; written by
                              `save_pretrained` (e.g. imported PyTorch weights).

A step that was being written when the process died stays in a temporary
directory that orbax never lists, so the previous step is used. Readers take
the newest *finished* step (finalized by orbax, with its 'params' and
'config' items), and retry once when a run that is writing the workdir
removes that step under them. A save that fails (a full disk, a path too
long) is raised as one `SaveError`, naming the step and the steps kept.

Every directory may be local or a URL (gs://bucket/run): paths go through
etils.epath, and only local ones are made absolute (orbax needs that).
"""
import errno
import json
import os
import weakref

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dcsfn_jax import models

CHECKPOINTS_SUBDIR = 'checkpoints'
BEST_METRIC = 'psnr'

_PARAMS = 'params'
_EMA_PARAMS = 'ema_params'
# What `load_pretrained(weights=...)` can pick: the optimiser's parameters or
# their exponential moving average (when the run kept one).
WEIGHTS = ('raw', 'ema')
_TRAIN_STATE = 'train_state'
_DATA_ITERATOR = 'data_iterator'
_CONFIG = 'config'

# The step each manager is writing in the background, for `SaveError`.
_PENDING_STEP = weakref.WeakKeyDictionary()


class SaveError(Exception):
  """A checkpoint could not be written; the message is one line for users."""


def as_path(path):
  """`path` as an epath.Path: a URL (gs://...) unchanged, a local path made
  absolute. os.path.abspath would turn gs://b/run into CWD/gs:/b/run."""
  path = os.fspath(path)
  if '://' in path:
    return epath.Path(path)
  return epath.Path(os.path.abspath(path))


def _best_metric(metrics):
  return metrics[BEST_METRIC]


def _options(*, keep=3, read_only=False):
  policies = ocp.checkpoint_managers
  return ocp.CheckpointManagerOptions(
      # best_fn makes orbax persist the metrics, so the best step is still
      # known (and kept) after a restart.
      best_fn=_best_metric,
      best_mode='max',
      preservation_policy=policies.AnyPreservationPolicy([
          policies.LatestN(n=keep),
          policies.BestN(get_metric_fn=_best_metric, reverse=False, n=1,
                         keep_checkpoints_without_metrics=False),
      ]),
      enable_async_checkpointing=not read_only,
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      create=not read_only,
  )


def make_manager(workdir, *, keep=3):
  """An asynchronous CheckpointManager in WORKDIR/checkpoints keeping the
  latest `keep` steps plus the best one by eval PSNR (pass
  metrics={'psnr': ...} to `save`)."""
  directory = as_path(workdir) / CHECKPOINTS_SUBDIR
  return ocp.CheckpointManager(directory, options=_options(keep=keep))


def read_config(manager, step):
  """The training config saved at `step` (model config completed)."""
  restored = manager.restore(
      step, args=ocp.args.Composite(**{_CONFIG: ocp.args.JsonRestore()}))
  return _complete_config(restored[_CONFIG],
                          f'{manager.directory} step {step}')


def train_state_fields(manager, step):
  """The top-level fields of the train state saved at `step` (e.g. {'opt_state',
  'step'}), read from its metadata alone."""
  folder = epath.Path(manager.directory) / str(step) / _TRAIN_STATE
  with ocp.StandardCheckpointer() as reader:
    return set(reader.metadata(folder).item_metadata.tree)


def set_aside(manager, step):
  """Renames a damaged step's folder to STEP.corrupt (orbax no longer lists
  it, nothing is deleted) and returns the new path."""
  folder = epath.Path(manager.directory) / str(step)
  aside = folder.with_name(f'{step}.corrupt')
  number = 1
  while aside.exists():
    number += 1
    aside = folder.with_name(f'{step}.corrupt{number}')
  folder.rename(aside)
  manager.reload()
  return aside


def _complete_config(saved, source):
  """The saved config as a ConfigDict, its model config completed
  (`models.complete`)."""
  config = ml_collections.ConfigDict(saved)
  if 'model' not in config:
    raise ValueError(f'{source} holds no model config (config.model); it was '
                     'not written by dcsfn_jax.checkpointing.')
  config.model = models.complete(config.model.to_dict(), source)
  return config


def config_to_dict(config):
  """A JSON-able dict of a ConfigDict (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def save(manager, step, *, params, train_state, data_state, config,
         metrics=None, ema_params=None):
  """Saves one training step (asynchronously when the manager is async).

  Args:
    manager: from `make_manager`.
    step: number of optimiser updates applied to `params`.
    params: parameter pytree (jax.Arrays, any sharding).
    train_state: pytree of arrays with everything else needed to resume
      (optimiser state, step).
    data_state: JSON-able state of the input pipeline (`get_state()`).
    config: the full training ConfigDict.
    metrics: e.g. {'psnr': 27.1} at eval steps; ranks the best checkpoint.
    ema_params: the parameters' moving average, if the run keeps one.

  Returns:
    Whether a checkpoint was started.

  Raises:
    SaveError: this save, or the one still in flight before it, failed.
  """
  items = {
      _PARAMS: ocp.args.StandardSave(params),
      _TRAIN_STATE: ocp.args.StandardSave(train_state),
      _DATA_ITERATOR: ocp.args.JsonSave(data_state),
      _CONFIG: ocp.args.JsonSave(config_to_dict(config)),
  }
  if ema_params is not None:
    items[_EMA_PARAMS] = ocp.args.StandardSave(ema_params)
  wait(manager)
  _PENDING_STEP[manager] = step
  try:
    return manager.save(step, args=ocp.args.Composite(**items),
                        metrics=metrics)
  except Exception as error:  # pylint: disable=broad-except
    raise _save_error(manager, step, error) from None


def wait(manager):
  """Blocks until the save in flight is written; SaveError if it failed."""
  try:
    manager.wait_until_finished()
  except Exception as error:  # pylint: disable=broad-except
    raise _save_error(manager, _PENDING_STEP.get(manager), error) from None
  finally:
    _PENDING_STEP.pop(manager, None)


def close(manager):
  """Closes the manager after `wait` (its errors are already reported, or
  an earlier error is on its way up)."""
  try:
    manager.close()
  except Exception:  # pylint: disable=broad-except
    pass


def _is_disk_full(error):
  """Whether `error` or one it chains from says the disk is full."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if (getattr(error, 'errno', None) in (errno.ENOSPC, errno.EDQUOT)
        or 'No space left on device' in str(error)
        or "os_error_code='28'" in str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


def _save_error(manager, step, error):
  """The one-line SaveError for a failed save of `step`."""
  kept = newest_finished_step(manager)
  kept = (f'steps up to {kept} are kept' if kept is not None else
          'no earlier step was saved')
  if _is_disk_full(error):
    return SaveError(f'disk full writing checkpoint {step} in '
                     f'{manager.directory}; {kept}.')
  reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return SaveError(f'could not write checkpoint {step} in '
                   f'{manager.directory} ({type(error).__name__}: '
                   f'{reason[:300]}); {kept}.')


def finished_steps(steps_dir):
  """Steps in `steps_dir` that orbax finalized and that hold 'params' and
  'config', oldest first."""
  steps_dir = epath.Path(steps_dir)
  try:
    children = list(steps_dir.iterdir())
  except OSError:
    return []
  steps = []
  for child in children:
    try:
      if (child.name.isdigit() and ocp.step.is_path_finalized(child)
          and _is_checkpoint(child)):
        steps.append(int(child.name))
    except OSError:  # removed while listed
      continue
  return sorted(steps)


def newest_finished_step(manager):
  """The newest step of `manager` on disk and finished, or None."""
  steps = finished_steps(manager.directory)
  return steps[-1] if steps else None


def restore(manager, step, *, abstract_params, abstract_train_state,
            abstract_ema_params=None):
  """Restores a step saved by `save` onto the shardings of the targets.

  Args:
    manager: from `make_manager`.
    step: a step in `manager.all_steps()`.
    abstract_params, abstract_train_state, abstract_ema_params: pytrees of
      jax.ShapeDtypeStruct with the shardings wanted now (any device count);
      abstract_ema_params None for a run without a moving average.

  Returns:
    dict with 'params', 'ema_params' (or None), 'train_state', 'data_state'
    and 'config' (ConfigDict, model config completed as in
    `load_pretrained`).
  """
  items = {
      _PARAMS: ocp.args.StandardRestore(abstract_params),
      _TRAIN_STATE: ocp.args.StandardRestore(abstract_train_state),
      _DATA_ITERATOR: ocp.args.JsonRestore(),
      _CONFIG: ocp.args.JsonRestore(),
  }
  if abstract_ema_params is not None:
    items[_EMA_PARAMS] = ocp.args.StandardRestore(abstract_ema_params)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return {
      'params': restored[_PARAMS],
      'ema_params': (restored[_EMA_PARAMS] if abstract_ema_params is not None
                     else None),
      'train_state': restored[_TRAIN_STATE],
      'data_state': restored[_DATA_ITERATOR],
      'config': _complete_config(restored[_CONFIG],
                                 f'{manager.directory} step {step}'),
  }


def save_pretrained(directory, params, config):
  """Writes a standalone inference checkpoint: params + config as JSON.

  Args:
    directory: created; must not exist yet (orbax refuses to overwrite).
    params: the model's parameter pytree (numpy or jax arrays).
    config: a ConfigDict whose `model` field holds the model config.
  """
  if 'model' not in config:
    raise ValueError('save_pretrained needs the full config with a `model` '
                     f'field; got fields {sorted(config.keys())}.')
  directory = as_path(directory)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
    checkpointer.save(
        directory,
        args=ocp.args.Composite(**{
            _PARAMS: ocp.args.StandardSave(params),
            _CONFIG: ocp.args.JsonSave(config_to_dict(config)),
        }))


def _is_checkpoint(path):
  return (path / _PARAMS).is_dir() and (path / _CONFIG).is_dir()


def resolve(path, prefer='latest'):
  """The checkpoint directory that `path` names.

  Args:
    path: a training workdir, its checkpoints/ directory, one step directory,
      or a `save_pretrained` directory.
    prefer: 'latest' or 'best' (by eval PSNR) when `path` holds several steps.
  """
  if prefer not in ('latest', 'best'):
    raise ValueError(f"prefer must be 'latest' or 'best', got {prefer!r}.")
  path = as_path(path)
  if not path.is_dir():
    raise FileNotFoundError(f'No checkpoint at {path}: no such directory.')
  if _is_checkpoint(path):
    return str(path)
  steps_dir = path
  if (path / CHECKPOINTS_SUBDIR).is_dir():
    steps_dir = path / CHECKPOINTS_SUBDIR
  finished = finished_steps(steps_dir)
  step = finished[-1] if finished else None
  if prefer == 'best' and finished:
    manager = ocp.CheckpointManager(steps_dir,
                                    options=_options(read_only=True))
    best = manager.best_step()
    manager.close()
    if best in finished:
      step = best  # else no eval has run yet, or the best is being removed
  if step is None:
    found = sorted(child.name for child in path.iterdir())[:10]
    raise FileNotFoundError(
        f'No checkpoint at {path}: expected a training workdir (with '
        f'{CHECKPOINTS_SUBDIR}/STEP/), a step directory or a save_pretrained '
        f"directory (with '{_PARAMS}/' and '{_CONFIG}/'), found {found}.")
  return str(steps_dir / str(step))


def weights_available(path, prefer='latest'):
  """WEIGHTS the checkpoint at `path` holds: ('raw',) or ('raw', 'ema')."""
  directory = as_path(resolve(path, prefer))
  return WEIGHTS if (directory / _EMA_PARAMS).is_dir() else WEIGHTS[:1]


def choose_weights(path, requested='ema', prefer='latest'):
  """(WEIGHTS entry to load, a line telling the user which and why) for a
  command's --weights flag: 'ema' takes the moving average where the
  checkpoint has one, else the raw parameters."""
  if requested not in WEIGHTS:
    raise ValueError(f'--weights={requested} must be one of '
                     f'{", ".join(WEIGHTS)}.')
  if requested == 'raw':
    return 'raw', 'weights: raw (--weights=raw)'
  if 'ema' in weights_available(path, prefer):
    return 'ema', ("weights: EMA, the parameters' moving average "
                   '(--weights=raw for the optimiser\'s own)')
  return 'raw', 'weights: raw (this checkpoint keeps no moving average)'


def load_pretrained(path, prefer='latest', weights='raw'):
  """Loads parameters and config from any checkpoint this project writes.

  Args:
    path: see `resolve`.
    prefer: 'latest' or 'best' for a workdir.
    weights: 'raw' (the optimiser's parameters) or 'ema' (their moving
      average; the raw parameters where the checkpoint has none — see
      `weights_available`).

  Returns:
    (params, config): params as a pytree of host numpy arrays (place them with
    `parallel.replicate` or pass them straight to a jitted apply), config the
    ConfigDict saved with them (`config.model` is the model config, with
    fields added since it was saved filled from the closest preset).
  """
  if weights not in WEIGHTS:
    raise ValueError(f'weights={weights!r} must be one of {WEIGHTS}.')
  directory = resolve(path, prefer)
  try:
    return _load(directory, weights)
  except Exception:  # pylint: disable=broad-except
    # A run writing the workdir may have removed the step just resolved
    # (its keep policy): then the newest finished step is read, once.
    if _is_checkpoint(as_path(directory)):
      raise
    return _load(resolve(path, prefer), weights)


def _load(directory, weights):
  """(host params, completed config) of the checkpoint at `directory`."""
  directory = as_path(directory)
  item = (_EMA_PARAMS if weights == 'ema' and (directory / _EMA_PARAMS).is_dir()
          else _PARAMS)
  with ocp.StandardCheckpointer() as reader:
    params_metadata = reader.metadata(directory / item).item_metadata.tree
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params_metadata)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
    restored = checkpointer.restore(
        directory,
        args=ocp.args.Composite(**{
            item: ocp.args.PyTreeRestore(restore_args=restore_args),
            _CONFIG: ocp.args.JsonRestore(),
        }))
  return restored[item], _complete_config(restored[_CONFIG], directory)
