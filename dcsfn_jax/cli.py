"""What every `python -m dcsfn_jax...` command shares at its flag boundary.

--help (and -h, -?, --helpshort, --helpfull) print the flags and exit 0; a
bad flag, an unexpected argument or a config file that fails to load is one
`error:` line, never a traceback.
"""
import sys

from absl import app
from absl import flags
from absl import logging

from dcsfn_jax import compile_cache

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


def flags_parser(explain=None):
  """A `flags_parser` for `app.run`.

  Args:
    explain: optional (argv, error) -> a better message or None, for errors
      only the command can explain (e.g. a misspelt --config field).
  """

  def parse(argv):
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
      message = (explain and explain(argv, error)) or _one_line(error)
      sys.exit(f'error: {message} (--help lists the flags)')
    if len(remaining) > 1:
      sys.exit(f'error: unexpected arguments {" ".join(remaining[1:])}; '
               'flags take the form --name=value (--help lists them).')
    return remaining

  return parse


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
  try:
    config = flags.FLAGS.config
    config.keys()
  except OSError:
    sys.exit('error: --config names a file that does not exist or does not '
             f'load; the configs are in configs/, e.g. --config {example}.')
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
  flags.DEFINE_integer('batch_size', None, f'{unit.capitalize()} per step '
                       '(default: one per device).')


def errors_only_logging():
  """absl logging at ERROR unless --verbosity was given: orbax logs every
  checkpoint read and write at INFO."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.ERROR)
