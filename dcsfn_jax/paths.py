"""Paths a user types: `~` and `$VARS` expanded wherever they are given.

The shell expands `--data_dir ~/tfds` but not `--data_dir=~/tfds` or
`--config.data_dir=~/tfds`, so every path the commands take goes through
`expand` once, at the boundary. URLs (gs://bucket/run) pass unchanged. Output
folders are checked before any work and leave nothing behind on failure, and
`refusal_to_replace` is the one --overwrite rule of every command: only files
this project wrote are ever replaced.
"""
import contextlib
import os
import shutil
import tempfile


def expand(path):
  """`path` with `~` and environment variables expanded; None and '' stay."""
  if not path:
    return path
  path = os.fspath(path)
  if '://' in path:
    return path
  return os.path.expandvars(os.path.expanduser(path))


def _nearest_existing(path):
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing) or '.'
  return existing


def check_writable(path, flag='--output'):
  """Raises OSError, before any work, unless folder `path` exists or can be
  created, and files can be written in it: tried with a hidden folder of
  the same depth, created and removed again (catches read-only and full file
  systems, missing permissions and names too long)."""
  existing = _nearest_existing(path)
  if not os.path.isdir(existing):
    raise NotADirectoryError(f'{flag} {path} cannot be created: {existing} '
                             'is a file, not a folder.')
  missing = os.path.relpath(os.path.abspath(path), os.path.abspath(existing))
  try:
    probe = tempfile.mkdtemp(prefix='.dcsfn_jax_probe_', dir=existing)
  except OSError as error:
    raise OSError(f'{flag} {path} cannot be written: {existing} refuses new '
                  f'files ({error.strerror or error}).') from None
  try:
    if missing != '.':
      os.makedirs(os.path.join(probe, missing))
  except OSError as error:
    raise OSError(f'{flag} {path} cannot be created '
                  f'({error.strerror or error}).') from None
  finally:
    shutil.rmtree(probe, ignore_errors=True)


def check_output_folder(path, overwrite=False, flag='--output'):
  """Raises OSError, before any work, for an output folder a command may not
  write into: a file, a non-empty folder (unless `overwrite`), or one that
  cannot be created or written (`check_writable`)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(f'{flag} {path} is a file; choose a folder.')
  if os.path.isdir(path) and os.listdir(path) and not overwrite:
    raise FileExistsError(f'{path} is not empty; pass --overwrite or choose '
                          f'another {flag}.')
  check_writable(path, flag)


def starts_with(prefix):
  """An `is_ours` test for `refusal_to_replace`: the file's text starts
  with `prefix`, as every file of that name this project writes does."""

  def is_ours(path):
    try:
      with open(path, encoding='utf-8', errors='replace') as file:
        return file.read(len(prefix)) == prefix
    except OSError:
      return False

  return is_ours


def refusal_to_replace(target, overwrite, is_ours, flag='--output'):
  """Why file `target` may not be written, or '' when it may.

  The one --overwrite rule: a file that exists is replaced only with
  --overwrite, and only when this project wrote it (`is_ours`: path ->
  bool, e.g. `images.files.is_our_output` for PNGs). A link or folder in
  the way is never replaced.
  """
  target = os.fspath(target)
  if not os.path.lexists(target):
    return ''
  if not overwrite:
    return f'{target} exists; pass --overwrite to replace it.'
  if (os.path.islink(target) or not os.path.isfile(target)
      or not is_ours(target)):
    return (f'{target} exists and was not written by dcsfn_jax; --overwrite '
            f'replaces only earlier outputs. Move it or choose another '
            f'{flag}.')
  return ''


def check_text_outputs(output, overwrite, files):
  """Raises OSError, before any work, unless the text files `files` ({name:
  the text each starts with when this project wrote it}) may be written into
  folder `output`: the folder writable, and `refusal_to_replace` for each."""
  check_writable(output)
  for name, start in files.items():
    refusal = refusal_to_replace(os.path.join(output, name), overwrite,
                                 starts_with(start))
    if refusal:
      raise FileExistsError(refusal)


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
