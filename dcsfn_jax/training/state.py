"""The train state, its two layouts, and the jitted training step.

The state is {'params', 'opt_state', 'step'} plus, with config.ema_decay > 0,
'ema_params': the parameters' exponential moving average, updated after each
optimiser step. With config.grad_accum_steps = k the global batch is k
micro-batches whose gradients are averaged before the one update.

  runtime layout     params and Adam moments with each dense stack's blocks
                     stacked (`models.runtime_layout`): what the step reads
  checkpoint layout  per-block names, as the released state_dict
                     (`checkpoint_layout`): what checkpoints hold
"""
import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
import numpy as np
import optax

from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax.data import augment
from dcsfn_jax.training import losses


def checkpoint_layout(tree):
  """A host copy of the replicated `tree` with per-block names (canonical).

  Copies (never views) each array, so a later donated step cannot touch what
  an asynchronous save is still writing.
  """
  return models.unstack_blocks(jax.tree.map(
      lambda x: np.array(x.addressable_data(0)), tree))


def create_train_state(model, optimizer, patch_size, init_key, *,
                       ema=False):
  """The train state in the runtime layout; with `ema`, 'ema_params' starts
  as a copy of the parameters.

  Params are drawn on the host (`models.init_params`), deterministic in
  `init_key`: a jitted `model.init` compiles one random kernel per tensor.
  DCSFN has no stochastic op, so the state holds no RNG. Not jittable; use
  `abstract_train_state` for shapes.
  """
  params = models.runtime_layout(
      models.init_params(model, init_key, (1, patch_size, patch_size, 3)),
      model)
  state = {'params': params,
           'opt_state': optimizer.init(params),
           'step': jnp.zeros((), jnp.int32)}
  if ema:
    state['ema_params'] = jax.tree.map(np.array, params)
  return state


def abstract_train_state(model, optimizer, patch_size, *, ema=False):
  """Shapes and dtypes of `create_train_state`'s result in the checkpoint
  layout, without computing it."""
  def init(key):
    params = model.init(key, jnp.zeros((1, patch_size, patch_size, 3),
                                       jnp.float32))['params']
    state = {'params': params,
             'opt_state': models.unstack_blocks(
                 optimizer.init(models.runtime_layout(params, model))),
             'step': jnp.zeros((), jnp.int32)}
    if ema:
      state['ema_params'] = params
    return state
  return jax.eval_shape(init, jax.random.key(0))


def _concatenated(tree):
  """Every leaf of `tree` raveled into one vector: a reduction over it
  compiles as one kernel rather than one per leaf, which shortens the
  compilation of the larger presets."""
  return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def micro_batches(batch, count):
  """[B, ...] leaves -> [count, B / count, ...]: micro-batch j holds rows j,
  j + count, j + 2 count, ..."""
  return jax.tree.map(
      lambda x: x.reshape(x.shape[0] // count, count,
                          *x.shape[1:]).swapaxes(0, 1), batch)


def loss_fn(params, batch, *, model, config):
  """(loss, parts) of patches {'rainy', 'clean'} float32 [B, P, P, 3]: the
  training objective (`losses.derain_loss`) of the model's output."""
  derained = model.apply({'params': params}, batch['rainy'])
  return losses.derain_loss(derained, batch['clean'],
                            ssim_padding=config.ssim_padding,
                            l1_weight=config.l1_weight)


def loss_and_grads(params, batch, *, model, config):
  """((loss, parts), grads) of the batch; with grad_accum_steps = k the mean
  over k micro-batches, one after another (a scan), so only one micro-batch's
  activations are alive at a time. Equal to the whole batch's, since every
  term of the loss is a mean over equal-sized micro-batches."""
  grad_fn = jax.value_and_grad(
      functools.partial(loss_fn, model=model, config=config), has_aux=True)
  count = config.grad_accum_steps
  if count == 1:
    return grad_fn(params, batch)
  micros = micro_batches(batch, count)

  def accumulate(grad_sum, micro):
    losses_and_parts, grads = grad_fn(params, micro)
    return jax.tree.map(jnp.add, grad_sum, grads), losses_and_parts

  # zeros_like keeps the parameters' type, varying over devices or not.
  grad_sum, losses_and_parts = jax.lax.scan(
      accumulate, jax.tree.map(jnp.zeros_like, params), micros)
  return (jax.tree.map(lambda x: jnp.mean(x, axis=0), losses_and_parts),
          jax.tree.map(lambda x: x / count, grad_sum))


def _local_loss_and_grads(params, batch, *, model, config):
  """`loss_and_grads` of one device's share of the batch (patches, or host
  windows made into patches here), averaged over the 'data' axis.

  The parameters are cast to varying over 'data' first, so that their
  gradients are this device's alone until the one pmean (left invariant,
  autodiff would sum them across devices itself, block by block).
  """
  if augment.is_window_batch(batch):
    batch = augment.released_patches(batch, config.patch_size)
  params = jax.lax.pcast(params, parallel.DATA_AXIS, to='varying')
  return jax.lax.pmean(loss_and_grads(params, batch, model=model,
                                      config=config), parallel.DATA_AXIS)


def train_step(state, batch, *, model, optimizer, schedule, config, mesh):
  """One Adam update on a global batch: patches {'rainy', 'clean'} float32
  [B, P, P, 3], or the released augmentation's host windows and draws
  (`data.augment.WINDOW_KEYS`, from `data.pipeline`), which become patches
  on the device first (P = config.patch_size).

  Data parallel by construction: each device of `mesh` runs the forward and
  backward pass on its own B / devices examples (a shard_map), and the loss
  and gradients are averaged once, with one all-reduce. GSPMD, given the
  whole-batch graph, partitions the weight-gradient convs (which contract
  over the batch) with hundreds of collective-permutes inside the block scan
  instead.
  """
  local = functools.partial(_local_loss_and_grads, model=model, config=config)
  (loss, parts), grads = jax.shard_map(
      local, mesh=mesh,
      in_specs=(PartitionSpec(), PartitionSpec(parallel.DATA_AXIS)),
      out_specs=PartitionSpec())(state['params'], batch)
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
               'step': state['step'] + 1}
  if 'ema_params' in state:
    new_state['ema_params'] = optax.incremental_update(
        params, state['ema_params'], 1.0 - config.ema_decay)
  return new_state, step_metrics


def make_train_step(model, optimizer, schedule, config, mesh):
  """`train_step` jitted over `mesh`: state replicated and donated, batch
  (patches or host windows) split along 'data'. (state, global batch) ->
  (state, metrics)."""
  replicated = parallel.replicated(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, optimizer=optimizer,
                        schedule=schedule, config=config, mesh=mesh),
      in_shardings=(replicated, parallel.batch_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,))
