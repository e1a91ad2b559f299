"""Paths a user types: `~` and `$VARS` expanded wherever they are given.

The shell expands `--data_dir ~/tfds` but not `--data_dir=~/tfds` or
`--config.data_dir=~/tfds`, so every path the commands take goes through
`expand` once, at the boundary. URLs (gs://bucket/run) pass unchanged. Output
folders are checked before any work and leave nothing behind on failure.
"""
import contextlib
import os
import shutil


def expand(path):
  """`path` with `~` and environment variables expanded; None and '' stay."""
  if not path:
    return path
  path = os.fspath(path)
  if '://' in path:
    return path
  return os.path.expandvars(os.path.expanduser(path))


def check_output_folder(path, overwrite=False, flag='--output'):
  """Raises OSError, before any work, for an output folder a command may not
  write into: a file, a non-empty folder (unless `overwrite`), or one that
  cannot be created because a file stands in the way."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(f'{flag} {path} is a file; choose a folder.')
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise FileExistsError(f'{path} is not empty; pass --overwrite or choose '
                          f'another {flag}.')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing) or '.'
  if not os.path.isdir(existing):
    raise NotADirectoryError(f'{flag} {path} cannot be created: {existing} '
                             'is a file, not a folder.')


@contextlib.contextmanager
def new_folder(path, flag='--output'):
  """Creates folder `path` (and its parents) for the body; if the body
  fails, removes again the outermost folder this created, so a failed
  command leaves no empty folders behind."""
  created = os.path.abspath(path)
  while not os.path.exists(os.path.dirname(created)):
    created = os.path.dirname(created)
  created = None if os.path.exists(created) else created
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    raise OSError(f'{flag} {path}: cannot create it '
                  f'({error.strerror}).') from None
  try:
    yield path
  except BaseException:
    if created:
      shutil.rmtree(created, ignore_errors=True)
    raise
