"""The run's folder: created and probed for writing, and held by one run at
a time through a lock file.

WORKDIR/train.lock holds {"pid", "host", "started"} of the run that holds the
folder. It is created atomically (written under a private name, then
hard-linked to train.lock, which fails if the name exists), so two runs
starting together cannot both take it. A holder counts as dead when the lock
names this host and no process with its pid exists (`os.kill(pid, 0)` finds
none); such a lock is taken over, with a log line. A lock of another host,
or of a live pid, refuses the run: a pid reused by an unrelated process also
refuses it, and the message says to remove the file when no run uses the
folder. URL workdirs (gs://) have no atomic create, and take no lock.
"""
import contextlib
import datetime
import json
import os
import socket

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from dcsfn_jax import checkpointing
from dcsfn_jax import paths
from dcsfn_jax.training import config as config_lib

LOCK_NAME = 'train.lock'


def prepare(workdir):
  """The workdir as an epath.Path, created; ConfigError when it cannot be.
  Returns (path, whether this call created it)."""
  path = checkpointing.as_path(paths.expand(workdir))
  if path.exists() and not path.is_dir():
    raise config_lib.ConfigError(f'--workdir {workdir} is a file; choose a '
                                 'folder for the run.')
  created = not path.exists()
  try:
    path.mkdir(parents=True, exist_ok=True)
    # One probe per process: the processes of a run share the workdir.
    probe = path / f'.write_test.{socket.gethostname()}.{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as error:
    raise config_lib.ConfigError(
        f'--workdir {workdir} is not writable ({error.strerror or error}); '
        'choose another folder.') from None
  return path, created


def remove_if_unused(path):
  """Removes a workdir this run created but never wrote into."""
  try:
    if path.is_dir() and not any(path.iterdir()):
      path.rmdir()
  except OSError:
    pass


def _holder(lock):
  """The lock's {"pid", "host", "started"}; {} when unreadable."""
  try:
    holder = json.loads(lock.read_text())
  except (OSError, ValueError):
    return {}
  return holder if isinstance(holder, dict) else {}


def _is_dead(holder):
  """Whether the holder is a process of this host that no longer exists."""
  if holder.get('host') != socket.gethostname():
    return False
  try:
    os.kill(int(holder['pid']), 0)  # signal 0: only asks whether it exists
  except ProcessLookupError:
    return True
  except (KeyError, TypeError, ValueError, PermissionError):
    pass  # no readable pid, or a live process of another user
  return False


def _try_create(lock, content):
  """Creates `lock` holding `content` unless it exists; whether it did."""
  private = lock.with_name(f'{lock.name}.{socket.gethostname()}.{os.getpid()}')
  private.write_text(content)
  try:
    os.link(private, lock)
    return True
  except FileExistsError:
    return False
  finally:
    private.unlink()


def _acquire(path):
  """Takes WORKDIR/train.lock; ConfigError naming a live holder."""
  lock = path / LOCK_NAME
  content = json.dumps({
      'pid': os.getpid(), 'host': socket.gethostname(),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds')})
  if _try_create(lock, content):
    return lock, content
  holder = _holder(lock)
  if _is_dead(holder):
    logging.warning('Taking over %s: its holder, process %s on this host '
                    '(started %s), no longer runs.', lock, holder.get('pid'),
                    holder.get('started'))
    lock.unlink(missing_ok=True)
    if _try_create(lock, content):
      return lock, content
    holder = _holder(lock)
  raise config_lib.ConfigError(
      f'--workdir {path} is in use by another train run (process '
      f'{holder.get("pid", "?")} on {holder.get("host", "?")}, started '
      f'{holder.get("started", "?")}); wait for it, choose another --workdir, '
      f'or remove {lock} if no run uses the folder.')


@contextlib.contextmanager
def locked(path):
  """Holds WORKDIR/train.lock for the block (process 0 takes it for all)."""
  lock = content = refusal = None
  if jax.process_index() == 0 and '://' not in os.fspath(path):
    try:
      lock, content = _acquire(path)
    except config_lib.ConfigError as error:
      refusal = error
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(
        np.int32(refusal is not None))
    if refused and refusal is None:
      refusal = config_lib.ConfigError(
          f'--workdir {path} is in use by another train run (process 0 '
          'names it).')
  if refusal is not None:
    raise refusal
  try:
    yield
  finally:
    if lock is not None and _holder(lock) == json.loads(content):
      lock.unlink(missing_ok=True)
