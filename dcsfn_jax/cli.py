"""What every `python -m dcsfn_jax...` command shares at its flag boundary.

--help (and -h, -?, --helpshort, --helpfull) print the flags and exit 0; a
bad flag, an unexpected argument, a config file that fails to load or a
JAX_PLATFORMS whose jax build or devices are missing is one `error:` line,
never a traceback. Log lines of the libraries that say nothing to the user (jax
probing for a TPU on a CPU host, tfds listing a dataset folder it is about to
write) are dropped.
"""
import importlib.metadata
import importlib.util
import logging as python_logging
import os
import pkgutil
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections

from dcsfn_jax import compile_cache
from dcsfn_jax import parallel

# The --weights choices (checkpointing.WEIGHTS) and what they mean.
_WEIGHTS_HELP = ("ema: the parameters' moving average where the checkpoint "
                 'keeps one (trained with --config.ema_decay > 0), else the '
                 "raw parameters; raw: always the optimiser's own.")

# absl's help flags exit 1; here they exit 0. Value: short help.
_HELP_FLAGS = {'help': True, 'helpshort': True, '?': True, 'h': True,
               'helpfull': False}


def _one_line(error):
  text = str(error).strip()
  # A config file's own exception arrives with its traceback as text.
  if 'Traceback' in text:
    return text.splitlines()[-1]
  return ' '.join(text.split())


# Log messages that say nothing to the user: jax trying the TPU backend of a
# CPU or GPU install; tfds noting that the version folder a build is about to
# write has no dataset_info.json yet; ml_collections' warning about a
# get_config() returning None, which `flags_parser` turns into an `error:`
# line.
_NOISE = ("Unable to initialize backend 'tpu'",
          'has no dataset_info.json',
          'get_config() returned None')


class _DropNoise(python_logging.Filter):

  def filter(self, record):
    message = record.getMessage()
    return not any(noise in message for noise in _NOISE)


def _drop_library_noise():
  """Filters _NOISE out of absl's handler (which also carries the Python
  loggers of jax and tfds)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropNoise) for f in handler.filters):
    handler.addFilter(_DropNoise())


# JAX_PLATFORMS entries that need a jax build besides the CPU one: words in
# the names of the jax plugins that provide them, and the extra to install.
_PLATFORM_BUILDS = {'cuda': (('cuda',), 'cuda12'),
                    'gpu': (('cuda', 'rocm'), 'cuda12'),
                    'tpu': (('tpu',), 'tpu')}


def _installed_jax_plugins():
  """Names of the installed jax plugins: entry points of group jax_plugins,
  modules of the jax_plugins namespace package, and libtpu."""
  names = set()
  for entry in importlib.metadata.entry_points(group='jax_plugins'):
    names |= {entry.name, entry.value}  # e.g. xla_cuda12 = jax_cuda12_plugin
  if importlib.util.find_spec('jax_plugins') is not None:
    import jax_plugins  # pylint: disable=g-import-not-at-top
    names |= {module.name for module in pkgutil.iter_modules(
        jax_plugins.__path__)}
  if importlib.util.find_spec('libtpu') is not None:
    names.add('libtpu')
  return names


def check_jax_platforms():
  """Exits with one `error:` line when $JAX_PLATFORMS names a platform whose
  jax build is not installed (jax itself fails with a bare AssertionError),
  or whose devices this host does not have (libtpu, installed by the test
  extra to compile for TPUs, fails with a traceback on a CPU host). Looks
  only at what is installed and on the buses: no backend is started, so
  `parallel.initialize_distributed` and `parallel.use_host_cores` still run
  first."""
  requested = os.environ.get('JAX_PLATFORMS', '')
  for platform in (p.strip().lower() for p in requested.split(',')):
    if platform not in _PLATFORM_BUILDS:
      continue
    words, extra = _PLATFORM_BUILDS[platform]
    if not any(word in name for word in words
               for name in _installed_jax_plugins()):
      sys.exit(f'error: JAX_PLATFORMS={requested} asks for the {platform} '
               f'build of jax, which is not installed; install it with '
               f"pip install -e '.[{extra}]', or unset JAX_PLATFORMS to run "
               'on the CPU.')
    if not parallel.host_has_devices(platform):
      sys.exit(f'error: JAX_PLATFORMS={requested} asks for {platform} '
               'devices, and this host has none (its jax build can only '
               'compile for them: python -m dcsfn_jax.aot); run on a host '
               'with them, or unset JAX_PLATFORMS to run on the CPU.')


def flags_parser(explain=None):
  """A `flags_parser` for `app.run`.

  Args:
    explain: optional (argv, error) -> a better message or None, for errors
      only the command can explain (e.g. a misspelt --config field).
  """

  def parse(argv):
    _drop_library_noise()
    for arg in argv[1:]:
      if arg == '--':
        break
      if arg.startswith('-') and arg.lstrip('-') in _HELP_FLAGS:
        app.usage(shorthelp=_HELP_FLAGS[arg.lstrip('-')],
                  writeto_stdout=True)
        sys.exit(0)
    try:
      remaining = flags.FLAGS(argv)
    except Exception as error:  # pylint: disable=broad-except
      if 'Flag --config must have a value other than None' in str(error):
        _exit_not_a_config(_config_path(argv), 'None')
      message = (explain and explain(argv, error)) or _one_line(error)
      sys.exit(f'error: {message} (--help lists the flags)')
    if len(remaining) > 1:
      sys.exit(f'error: unexpected arguments {" ".join(remaining[1:])}; '
               'flags take the form --name=value (--help lists them).')
    if ('config' in flags.FLAGS and flags.FLAGS['config'].present
        and flags.FLAGS['config'].value is None):
      _exit_not_a_config(_config_path(argv), 'None')
    check_jax_platforms()
    parallel.skip_absent_tpu()
    return remaining

  return parse


def _config_path(argv):
  """The --config file named in `argv`, without its :variant."""
  for index, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--config='):
      return arg[len('--config='):].split(':')[0]
    if arg == '--config' and index + 1 < len(argv):
      return argv[index + 1].split(':')[0]
  return '?'


def _exit_not_a_config(path, found, example='configs/demo.py'):
  sys.exit(f'error: --config {path}: its get_config() returns {found}, not '
           'an ml_collections.ConfigDict; start it from '
           f'dcsfn_jax.training.config.base_config(), as {example} does.')


def define_weights_flag():
  """--weights for the commands that read a project checkpoint."""
  flags.DEFINE_enum('weights', 'ema', ['ema', 'raw'], _WEIGHTS_HELP)


def define_compile_cache_flag():
  """--compile_cache, for the commands that compile the model
  (`compile_cache.enable` reads it)."""
  flags.DEFINE_string('compile_cache', None, compile_cache.FLAG_HELP)


def loaded_config(example='configs/demo.py'):
  """flags.FLAGS.config; a config file that failed to load (ml_collections
  defers the error to the first use) is one `error:` line."""
  config = flags.FLAGS.config
  try:
    # A file that failed to load gives an object whose every use raises.
    getattr(config, 'keys', None)
  except OSError:
    sys.exit('error: --config names a file that does not exist or does not '
             f'load; the configs are in configs/, e.g. --config {example}.')
  if not isinstance(config, ml_collections.ConfigDict):
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
    _exit_not_a_config(
        config_flags.get_config_filename(flags.FLAGS['config']),
        type(config).__name__, example)
  return config


def define_model_run_flags(unit='images'):
  """--bucket, --self_ensemble and --batch_size, for the commands that run
  the model over images (`unit` names what a batch holds)."""
  flags.DEFINE_bool('bucket', False, 'Speed mode: pad images to a few shape '
                    'buckets (few compilations) instead of running each at '
                    'its native size. CHANGES THE OUTPUT everywhere in the '
                    "image, so it is no longer the network's own.")
  flags.DEFINE_bool('self_ensemble', False, 'Average the model over the 8 '
                    'flips and rotations of each image, each undone '
                    '(geometric self-ensemble): 8x the cost.')
  define_batch_size_flag(unit)


def define_batch_size_flag(unit='images'):
  """--batch_size for the commands that run batches through the evaluator
  or the model (`unit` names what a batch holds)."""
  flags.DEFINE_integer('batch_size', None, f'{unit.capitalize()} per step '
                       '(default: one per device).', lower_bound=1)


def warnings_and_errors_logging():
  """absl logging at WARNING unless --verbosity was given: tfds logs each
  split it writes at INFO."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def errors_only_logging():
  """absl logging at ERROR unless --verbosity was given: orbax logs every
  checkpoint read and write at INFO."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)
