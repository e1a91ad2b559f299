"""The training config: every field, its default, and the static checks.

Config files in configs/ start from `base_config` and change what their
dataset needs; `validate` rejects typos and impossible values before anything
is compiled (the checks that need the devices or the data are the trainer's,
dcsfn_jax/training/trainer.py and inputs.py).
"""
import difflib
import math

import ml_collections

from dcsfn_jax import data
from dcsfn_jax import metrics
from dcsfn_jax import models

AUGMENTATIONS = ('released', 'crop')


def base_config(model_preset='official'):
  """The released recipe (settings.py / train.py) on an unnamed dataset."""
  config = ml_collections.ConfigDict()
  config.model = models.preset(model_preset)
  config.dataset = ''              # a dcsfn_jax.data catalog name
  config.data_dir = ''             # '' -> the data package's default
  config.prepare_data = False      # build synthetic_rain wherever it is missing
                                   # (each host with a node-local data_dir)
  config.train_split = 'train'
  config.eval_split = 'test'

  config.batch_size = 24           # global, over all devices and hosts
  config.patch_size = 64
  config.augment = 'released'      # 'released' | 'crop'
  config.epochs = 800
  config.total_steps = -1          # -1: int(epochs * pairs / batch_size)

  config.learning_rate = 5e-4      # Adam, default betas and eps
  config.lr_decay_factor = 0.1     # at 3/5 and 4/5 of the run
  config.ssim_padding = 'same'     # SSIM filtering in the loss
  config.l1_weight = 0.0           # loss = -SSIM + l1_weight * L1
  config.ema_decay = 0.0           # 0: no moving average (as released);
                                   # e.g. 0.999 keeps ema_params as well
  config.grad_accum_steps = 1      # k: the batch runs as k micro-batches,
                                   # one update per batch_size images
  config.remat_budget_gb = 8.0     # with model.remat='auto' on accelerators:
                                   # recompute the blocks' activations only
                                   # when keeping them would take more per
                                   # device, or more than half its memory
                                   # (CPU hosts always recompute:
                                   # training.memory)

  config.seed = 66                 # the release's torch.manual_seed
  config.init_from = ''            # checkpoint to start from (params only)

  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.eval_max_images = -1      # -1: the whole eval split
  config.num_panels = 3            # rainy | derained | clean images per eval
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3      # latest ones, plus the best by PSNR
  return config


def variant_name(arg, allowed=models.PRESETS):
  """The variant a config file was asked for ('configs/x.py:paper'); the
  first of `allowed` when none was."""
  name = arg or allowed[0]
  if name not in allowed:
    raise ValueError(f'Unknown config variant {name!r}; choose one of '
                     f'{", ".join(allowed)} (e.g. --config=configs/FILE.py:'
                     f'{allowed[-1]}).')
  return name


class ConfigError(ValueError):
  """A config field that is misspelt or impossible; the message names it."""


def _fail(message):
  raise ConfigError(f'Invalid training config: {message}')


def _unknown_fields(config, reference, prefix=''):
  problems = []
  for key in config.keys():
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference.keys()), n=1)
      hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ''
      problems.append(f"unknown field '{prefix}{key}'{hint}")
  return problems


def check_override(dotted):
  """ConfigError with a did-you-mean when --config.DOTTED names no field."""
  node, prefix = base_config(), ''
  for key in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      fields = list(node.keys()) if isinstance(
          node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(key, fields, n=1)
      hint = f' (did you mean --config.{prefix}{close[0]}?)' if close else ''
      where = f'config.{prefix.rstrip(".")}' if prefix else 'the config'
      _fail(f"--config.{dotted}: {where} has no field '{key}'{hint}. The "
            'fields and their defaults are listed in '
            'dcsfn_jax/training/config.py (base_config).')
    node, prefix = node[key], f'{prefix}{key}.'


def leaves(config, prefix=''):
  """(dotted name, value) of every field of `config`, nested ones included."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def validate(config):
  """Raises ValueError naming the field for typos and impossible values."""
  reference = base_config()
  problems = _unknown_fields(config, reference)
  missing = sorted(set(reference.keys()) - set(config.keys()))
  if missing:
    problems.append(f'missing field(s) {missing}; start from '
                    'dcsfn_jax.training.config.base_config()')
  if problems:
    _fail('; '.join(problems) + '.')
  try:
    models.validate(config.model)
  except ValueError as error:
    raise ConfigError(f'config.model: {error}') from error
  if config.model.dtype == 'float64':
    _fail("config.model.dtype='float64' is for checking the model against "
          "float64 references, not for runs; use 'float32' or 'bfloat16'.")

  for name, value in leaves(config):
    if isinstance(value, float) and not math.isfinite(value):
      _fail(f'{name}={value!r} must be a finite number.')

  def positive_int(name):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      _fail(f'{name}={value!r} must be a positive integer.')

  for name in ('batch_size', 'patch_size', 'epochs', 'log_every_steps',
               'eval_every_steps', 'checkpoint_every_steps',
               'keep_checkpoints'):
    positive_int(name)
  if config.dataset not in data.SPECS:
    _fail(f'dataset={config.dataset!r} is not one of '
          f'{", ".join(data.SPECS)}.')
  if config.total_steps != -1 and config.total_steps < 1:
    _fail(f'total_steps={config.total_steps} must be -1 (derived from epochs) '
          'or positive.')
  if config.eval_max_images != -1 and config.eval_max_images < 1:
    _fail(f'eval_max_images={config.eval_max_images} must be -1 (all) or '
          'positive.')
  if config.num_panels < 0:
    _fail(f'num_panels={config.num_panels} must be >= 0.')
  if config.augment not in AUGMENTATIONS:
    _fail(f'augment={config.augment!r} must be one of {AUGMENTATIONS}.')
  if config.ssim_padding not in metrics.SSIM_PADDINGS:
    _fail(f'ssim_padding={config.ssim_padding!r} must be one of '
          f'{metrics.SSIM_PADDINGS}.')
  if not config.learning_rate > 0:
    _fail(f'learning_rate={config.learning_rate!r} must be positive.')
  if not 0 < config.lr_decay_factor <= 1:
    _fail(f'lr_decay_factor={config.lr_decay_factor!r} must lie in (0, 1].')
  if not 0.0 <= config.ema_decay < 1.0:
    _fail(f'ema_decay={config.ema_decay!r} must lie in [0, 1) (0: off).')
  if (isinstance(config.remat_budget_gb, bool)
      or not isinstance(config.remat_budget_gb, (int, float))
      or not config.remat_budget_gb > 0):
    _fail(f'remat_budget_gb={config.remat_budget_gb!r} must be a positive '
          'number of gigabytes.')
  if (isinstance(config.grad_accum_steps, bool)
      or not isinstance(config.grad_accum_steps, int)
      or config.grad_accum_steps < 1):
    _fail(f'grad_accum_steps={config.grad_accum_steps!r} must be a positive '
          'integer.')
  if (isinstance(config.seed, bool) or not isinstance(config.seed, int)
      or not 0 <= config.seed < 2**31):
    _fail(f'seed={config.seed!r} must be an integer from 0 to {2**31 - 1}.')
  if config.l1_weight < 0:
    _fail(f'l1_weight={config.l1_weight!r} must be >= 0.')
  minimum = models.minimum_size(config.model)
  if config.patch_size < minimum:
    _fail(f'patch_size={config.patch_size} is below the {minimum} px this '
          f'model runs on natively; use --config.patch_size={minimum} or more.')
  if config.prepare_data and config.dataset != 'synthetic_rain':
    _fail('prepare_data=True only builds synthetic_rain; prepare '
          f'{config.dataset} with python -m dcsfn_jax.prepare.')
