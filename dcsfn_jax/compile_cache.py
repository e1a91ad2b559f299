"""The persistent compilation cache: which folder, and switching it on.

Each command that compiles the model (train, evaluate, derain, score) calls
`enable(flags.FLAGS.compile_cache)` first thing in main(), before anything
compiles; XLA then loads the programs an earlier run compiled from that
folder instead of compiling them again. The folder, first that applies:

  1. --compile_cache=DIR;
  2. $DCSFN_COMPILE_CACHE=DIR (empty counts as unset);
  3. $JAX_COMPILATION_CACHE_DIR, JAX's own setting, which JAX applies as is;
  4. $XDG_CACHE_HOME/dcsfn_jax/jax, else ~/.cache/dcsfn_jax/jax.

'off' in 1 or 2 enables no cache. A folder that cannot be created or written
costs one `warning:` line, and the command runs without a cache.

JAX names each entry by a hash of the program, the jaxlib version, the
backend and its version, the XLA flags and the compile options (which hold
the folder's path), so other versions, devices or folders never read an
entry. Every entry here also carries a SHA-256 of its key and contents: a
truncated, overwritten or misplaced file (another key's entry) is a miss, so
the program is compiled afresh and the entry replaced, never executed.
"""
import hashlib
import os
import pathlib
import sys
import tempfile

import jax
from jax._src import compilation_cache as jax_compilation_cache
from jax._src import compilation_cache_interface

OFF = 'off'
ENVIRONMENT_VARIABLE = 'DCSFN_COMPILE_CACHE'
FLAG_HELP = ('Folder of the persistent compilation cache, where compiled '
             'programs are kept for the next run, or "off" (default '
             f'${ENVIRONMENT_VARIABLE}, else $XDG_CACHE_HOME/dcsfn_jax/jax, '
             'else ~/.cache/dcsfn_jax/jax).')

# Programs that compile faster than this are not written, unless
# $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise: the small
# helpers (seeds, conversions) compile in 0.02-0.1 s and would only add
# files; the model's train and eval steps take seconds (benchmarks/RESULTS.md).
MIN_COMPILE_SECONDS = 0.1

_DIGEST_BYTES = 32  # SHA-256
_SUFFIX = '-cache'


def default_folder(environ=None):
  """$XDG_CACHE_HOME/dcsfn_jax/jax, else ~/.cache/dcsfn_jax/jax (the XDG base
  directory rule; a relative $XDG_CACHE_HOME is ignored, as the rule says)."""
  environ = os.environ if environ is None else environ
  base = environ.get('XDG_CACHE_HOME', '')
  if not os.path.isabs(base):
    home = environ.get('HOME') or os.path.expanduser('~')
    base = os.path.join(home, '.cache')
  return pathlib.Path(base) / 'dcsfn_jax' / 'jax'


def choose_folder(flag_value=None, environ=None):
  """The cache folder for `flag_value` (--compile_cache) and `environ`, or
  None for no cache of this project's making ('off', or JAX's own
  $JAX_COMPILATION_CACHE_DIR set)."""
  environ = os.environ if environ is None else environ
  choice = flag_value or environ.get(ENVIRONMENT_VARIABLE, '')
  if choice.strip().lower() == OFF:
    return None
  if choice:
    return pathlib.Path(os.path.expanduser(choice))
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return None
  return default_folder(environ)


def enable(flag_value=None):
  """Turns on the persistent compilation cache for this process.

  Args:
    flag_value: --compile_cache: a folder, 'off', or None for the default.

  Returns:
    The folder in use, or None when no cache was enabled.
  """
  folder = choose_folder(flag_value)
  if folder is None:
    return None
  try:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder):
      pass
  except OSError as error:
    print(f'warning: compilation cache {folder} is not writable '
          f'({error.strerror or error}); running without it '
          f'(--compile_cache=DIR chooses another folder, =off none).',
          file=sys.stderr)
    return None
  jax_compilation_cache.get_file_cache = lambda path: (
      CheckedFileCache(path), path)
  jax.config.update('jax_compilation_cache_dir', os.fspath(folder))
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      MIN_COMPILE_SECONDS)
  return folder


class CheckedFileCache(compilation_cache_interface.CacheInterface):
  """One file per entry, FOLDER/KEY-cache: SHA-256(key + value), then value.

  An entry whose digest does not match reads as absent; writes go through a
  temporary file and a rename, so a reader never sees half an entry and a
  bad entry is replaced.
  """

  def __init__(self, path):
    self._path = pathlib.Path(path)

  def _file(self, key):
    return self._path / f'{key}{_SUFFIX}'

  @staticmethod
  def _digest(key, value):
    return hashlib.sha256(key.encode() + b'\0' + value).digest()

  def get(self, key):
    try:
      stored = self._file(key).read_bytes()
    except OSError:
      return None
    digest, value = stored[:_DIGEST_BYTES], stored[_DIGEST_BYTES:]
    if digest != self._digest(key, value):
      return None
    return value

  def put(self, key, value):
    descriptor, temporary = tempfile.mkstemp(dir=self._path, suffix='.tmp')
    try:
      with os.fdopen(descriptor, 'wb') as file:
        file.write(self._digest(key, value) + value)
      os.replace(temporary, self._file(key))
    except BaseException:
      os.unlink(temporary)
      raise
