"""The programs the commands run, lowered for a target's devices.

Each is built by the functions the commands call, so that what compiles here
is what runs there:

  train     `state.make_train_step` of the trainer's model (conv_impl and
            'auto' remat resolved by `memory.resolve_remat` for the target's
            devices), Adam, the runtime-layout state replicated and the
            pipeline's global batch split over 'data' (host windows for
            augment='released', patches for 'crop');
  evaluate  the `Evaluator`'s scoring step at one 321x481 image per device
            (Rain100H's test size), full float32 as `Runner` runs it;
  derain    derain's forward on one 1024x1024 photo, its rows split over
            the devices as `Runner` splits a lone image on accelerators.

`augmentation` is the part of the train step that turns one device's host
windows into patches (augment='released'), lowered alone so that its share
of the step's cost can be told apart.
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax.data import augment
from dcsfn_jax.evaluation import evaluator as evaluator_lib
from dcsfn_jax.inference import runner as runner_lib
from dcsfn_jax.training import memory
from dcsfn_jax.training import schedules
from dcsfn_jax.training import state as state_lib

EVAL_SHAPE = (321, 481)
DERAIN_SHAPE = (1024, 1024)
PROGRAMS = ('train', 'evaluate', 'derain')


@dataclasses.dataclass
class Program:
  """A program lowered for a target.

  Attributes:
    name: one of PROGRAMS.
    lowered: the `jax.stages.Lowered`.
    dtype: the compute dtype of its convolutions.
    precision: jax matmul precision it runs at ('default' or 'highest').
    note: what was chosen for the target, e.g. the remat line.
    remat: what the model rematerialises (train only).
  """
  name: str
  lowered: object
  dtype: str
  precision: str
  note: str = ''
  remat: bool | None = None


def batch_spec(config, global_batch_size):
  """Shapes and dtypes of the global batch `data.pipeline.train_iterator`
  yields for `config` (jax.ShapeDtypeStruct leaves)."""
  b, p = global_batch_size, config.patch_size
  if config.augment == 'released':
    w = augment.window_size(p)
    return {'window': jax.ShapeDtypeStruct((b, w, w, 6), jnp.uint8),
            'crop_size': jax.ShapeDtypeStruct((b, 2), jnp.int32),
            'flip': jax.ShapeDtypeStruct((b,), jnp.bool_),
            'degrees': jax.ShapeDtypeStruct((b,), jnp.int32)}
  return {name: jax.ShapeDtypeStruct((b, p, p, 3), jnp.float32)
          for name in ('rainy', 'clean')}


def _sharded(tree, sharding):
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=sharding), tree)


def train_step(config, devices, batch_size=None, memory_bytes=None):
  """The trainer's step for `config` over `devices`, lowered.

  Args:
    config: a training config.
    devices: every device of the run (all hosts).
    batch_size: the global batch (default config.batch_size).
    memory_bytes: one device's memory, for the 'auto' remat choice (real
      devices report it themselves, compile-only ones do not).
  """
  config = ml_collections.ConfigDict(config.to_dict())
  if batch_size is not None:
    config.batch_size = batch_size
  mesh = parallel.make_mesh(devices)
  model_config, remat_line = memory.resolve_remat(config, mesh.devices.flat,
                                                  memory_bytes)
  model = models.build_model(model_config)
  # The trainer's schedule; its milestones change constants, not the
  # program's shape.
  total = config.total_steps if config.total_steps != -1 else 1000
  schedule = schedules.multistep_lr(config.learning_rate,
                                    schedules.milestones_at_fractions(total),
                                    config.lr_decay_factor)
  optimizer = optax.adam(schedule)
  abstract_state = state_lib.abstract_train_state(
      model, optimizer, config.patch_size, ema=config.ema_decay > 0)
  runtime_state = jax.eval_shape(
      lambda state: models.runtime_layout(state, model), abstract_state)
  step = state_lib.make_train_step(model, optimizer, schedule, config, mesh)
  lowered = step.lower(
      _sharded(runtime_state, parallel.replicated(mesh)),
      _sharded(batch_spec(config, config.batch_size),
               parallel.batch_sharded(mesh)))
  return Program('train', lowered, dtype=model_config.dtype,
                 precision='default', note=remat_line,
                 remat=bool(model_config.remat))


def augmentation(config, device, images):
  """`data.augment.released_patches` on `images` windows (one device's share
  of the batch), lowered for `device`: the train step's first part for
  config.augment='released'."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  windows = _sharded(batch_spec(config, images), sharding)
  lowered = augment.released_patches.lower(windows,
                                           patch_size=config.patch_size)
  return Program('augmentation', lowered, dtype='float32',
                 precision='highest')


def _runtime_params(model_config, devices):
  from dcsfn_jax import platforms  # pylint: disable=g-import-not-at-top
  model = platforms.model_for(model_config, devices)
  params = jax.eval_shape(
      lambda key: model.init(key, jnp.zeros((1, 64, 64, 3)))['params'],
      jax.random.key(0))
  return jax.eval_shape(lambda p: models.runtime_layout(p, model), params)


def evaluate_step(model_config, devices, shape=EVAL_SHAPE):
  """The evaluator's scoring step (all protocols, rainy baseline) on one
  image of `shape` per device, lowered."""
  evaluator = evaluator_lib.Evaluator(model_config, devices=devices)
  height, width = shape
  blank = {'rainy': np.zeros((height, width, 3), np.uint8),
           'clean': np.zeros((height, width, 3), np.uint8)}
  batch = evaluator._batch(  # pylint: disable=protected-access
      shape, [blank] * evaluator.runner.batch_size)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       batch)
  lowered = evaluator.runner.lower(_runtime_params(model_config, devices),
                                   batch)
  return Program('evaluate', lowered, dtype=model_config.dtype,
                 precision=runner_lib.MATMUL_PRECISION)


def derain_forward(model_config, devices, shape=DERAIN_SHAPE):
  """derain's forward on one photo of `shape`, lowered as `Derainer` runs
  it (rows split over the devices on accelerators)."""
  runner = runner_lib.Runner(
      runner_lib.forward_fn(model_config, devices=devices), devices=devices)
  photo = {'rainy': jax.ShapeDtypeStruct((1, *shape, 3), jnp.float32)}
  lowered = runner.lower(_runtime_params(model_config, devices), photo)
  split = ('rows split over the devices' if runner.split_rows
           else 'whole on one device')
  return Program('derain', lowered, dtype=model_config.dtype,
                 precision=runner_lib.MATMUL_PRECISION, note=split)
