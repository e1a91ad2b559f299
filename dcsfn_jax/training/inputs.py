"""The train and eval sources of a run, checked against the config.

With `config.prepare_data`, synthetic_rain is built wherever a process cannot
read it (once for a shared data_dir, once per host for node-local ones).
"""
import socket
import zlib

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from dcsfn_jax import data
from dcsfn_jax import paths
from dcsfn_jax.training import config as config_lib


def check_batch_split(config, devices, processes):
  """ConfigError unless config.batch_size splits evenly over `devices`
  (times grad_accum_steps) and `processes`: the trainer's rule, which
  `python -m dcsfn_jax.aot` also applies to the slices it compiles for."""
  accum = config.grad_accum_steps
  if config.batch_size % (devices * accum):
    multiple = devices * accum
    what = (f'the {devices} devices' if accum == 1 else
            f'grad_accum_steps={accum} x {devices} devices = {multiple}')
    raise config_lib.ConfigError(
        f'batch_size={config.batch_size} is not divisible by {what}; use a '
        f'multiple of {multiple}, e.g. --config.batch_size='
        f'{multiple * max(1, config.batch_size // multiple)}.')
  if config.batch_size % processes:
    raise config_lib.ConfigError(
        f'batch_size={config.batch_size} is not divisible by the '
        f'{processes} processes.')


def check_against_data(config, train_source, eval_source):
  """Errors, before any compilation, for what the data makes impossible."""
  check_batch_split(config, jax.device_count(), jax.process_count())
  if len(train_source) < config.batch_size:
    raise config_lib.ConfigError(
        f'{config.dataset}/{config.train_split} has {len(train_source)} '
        f'pairs, fewer than batch_size={config.batch_size}; every batch drops '
        'the remainder, so nothing would train.')
  if len(eval_source) == 0:
    raise config_lib.ConfigError(
        f'{config.dataset}/{config.eval_split} is empty.')
  # Sizes of the first images only: checking all would decode the whole split.
  smallest = min(min(train_source[i]['height'], train_source[i]['width'])
                 for i in range(min(len(train_source), 16)))
  if smallest < config.patch_size:
    raise config_lib.ConfigError(
        f'patch_size={config.patch_size} is larger than the images of '
        f'{config.dataset}/{config.train_split} ({smallest} px on their short '
        f'side); use --config.patch_size={smallest} or less.')


def _load_split(config, split):
  try:
    return data.load_split(config.dataset, split,
                           paths.expand(config.data_dir) or None)
  except data.DatasetNotPreparedError:
    raise
  except ValueError as error:  # e.g. a split the dataset lacks
    raise config_lib.ConfigError(str(error)) from error


def _is_prepared(config):
  try:
    _load_split(config, config.train_split)
  except data.DatasetNotPreparedError:
    return False
  return True


def _prepare(config):
  logging.info('Preparing %s in %s on process %d.', config.dataset,
               config.data_dir or 'the default data_dir', jax.process_index())
  data.prepare(config.dataset,
               data_dir=paths.expand(config.data_dir) or None)


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


def load_sources(config):
  """(train, eval) random-access sources; builds synthetic_rain if asked."""
  if config.prepare_data:
    _prepare_where_missing(config)
  train_source = _load_split(config, config.train_split)
  eval_source = _load_split(config, config.eval_split)
  if config.eval_max_images != -1:
    eval_source = data.sources.first(eval_source, config.eval_max_images)
  return train_source, eval_source
