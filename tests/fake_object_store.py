"""A stand-in for a gs:// bucket in tests, through etils.epath's test hooks.

Inside `fake_bucket(root)`, every etils.epath operation on gs://NAME/KEY acts
on root/NAME/KEY, and opening a gs:// file for appending fails, as it does on
Google Cloud Storage, where objects are written whole. Only code that goes
through epath sees the bucket: builtin open() or os.* on a gs:// string still
fail, which is what the tests want to catch. TensorStore (orbax's array
writer) and tensorboardX do not use epath; tests redirect those themselves.
"""
import contextlib
import os

from etils.epath import testing

SCHEME = 'gs://'
_OPERATIONS = ('copy', 'exists', 'glob', 'isdir', 'listdir', 'makedirs',
               'mkdir', 'open', 'remove', 'rename', 'replace', 'rmtree',
               'stat', 'walk')


def local_path(root, path):
  """Where the fake bucket under `root` keeps `path` (others unchanged)."""
  path = os.fspath(path)
  if path.startswith(SCHEME):
    return os.path.join(os.fspath(root), path[len(SCHEME):])
  return path


@contextlib.contextmanager
def fake_bucket(root):
  """Serves gs:// paths from the local directory `root` (see module doc)."""

  def redirect(operation):
    def run(original, path, *args, **kwargs):
      if (operation == 'open' and os.fspath(path).startswith(SCHEME)
          and 'a' in (args[0] if args else kwargs['mode'])):
        raise OSError(f'{path}: objects cannot be appended to on GCS')
      if operation in ('copy', 'rename', 'replace'):
        args = (local_path(root, args[0]),) + args[1:]
      return original(local_path(root, path), *args, **kwargs)
    return run

  with testing.mock_epath(**{name: redirect(name) for name in _OPERATIONS}):
    yield
