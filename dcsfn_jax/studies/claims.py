"""Claims: which process trains which run of a study, so that several
processes on one workdir (one host, NFS, a SLURM array) never train a run
twice.

WORKDIR/claims/VARIANT.seed_N.json holds the run's state and its history:

  {"state": "running" | "done" | "failed" | "released",
   "holder": {"pid", "host", "task", "started"},  # the study process
   "child_pid": the trainer's pid or null,
   "heartbeat": seconds since the epoch, refreshed every HEARTBEAT_SECONDS,
   "attempts": [{"host", "pid", "task", "started", "seconds", "outcome",
                 "reason", "step"}, ...],
   "result": the run's final figures (state "done")}

A claim is created atomically: written under a private name, then
hard-linked to its final name, which fails if the name exists (POSIX, and
NFS since v3), so of two processes starting together one takes the run.

A "running" claim's holder is dead when either
  - it names this host and neither its pid nor its child's pid exists
    (`os.kill(pid, 0)`), or
  - its heartbeat is older than TIMEOUT_SECONDS (any host; hosts' clocks
    must agree to well within that).
A dead claim, and a "released" one (its holder stopped on a signal; the run
resumes), is taken over through a second atomic create: of
claims/VARIANT.seed_N.json.take-DIGEST, DIGEST naming the exact claim
judged takeable. One process wins that name; it checks that the claim still
reads as judged and replaces it (write, then rename). The markers stay, so a
slow loser can never take the same claim after the winner.

URL workdirs (gs://) have no atomic create: there a claim is written when
absent and read back, which two processes starting within the same moment
can both pass; give them disjoint --task_index shares.
"""
import datetime
import hashlib
import json
import os
import socket
import time
import uuid

HEARTBEAT_SECONDS = 30
TIMEOUT_SECONDS = 600
STATES = ('running', 'done', 'failed', 'released')
FOLDER = 'claims'


def now():
  return time.time()


def _iso(seconds):
  return datetime.datetime.fromtimestamp(
      seconds, datetime.timezone.utc).isoformat(timespec='seconds')


def path_of(workdir, run_name):
  """WORKDIR/claims/VARIANT.seed_N.json for run 'VARIANT/seed_N'."""
  return workdir / FOLDER / (run_name.replace('/', '.') + '.json')


def read(path):
  """The claim's dict; None when absent, {} when unreadable (being
  written, or damaged)."""
  try:
    text = path.read_text()
  except FileNotFoundError:
    return None
  except OSError:
    return {}
  try:
    claim = json.loads(text)
  except ValueError:
    return {}
  return claim if isinstance(claim, dict) else {}


def _exists(pid):
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (TypeError, ValueError, PermissionError, OverflowError):
    return True  # unreadable, or another user's live process
  return True


def is_dead(claim, at=None):
  """Whether a "running" claim's holder is gone (see the module doc)."""
  at = now() if at is None else at
  heartbeat = claim.get('heartbeat')
  if not isinstance(heartbeat, (int, float)) or (
      at - heartbeat > TIMEOUT_SECONDS):
    return True
  holder = claim.get('holder') or {}
  if holder.get('host') != socket.gethostname():
    return False
  pids = [holder.get('pid'), claim.get('child_pid')]
  return not any(_exists(pid) for pid in pids if pid is not None)


def takeable(claim, at=None):
  """Whether a process may take the run: no claim, a released one, or a
  running one whose holder is dead."""
  if claim is None:
    return True
  if not claim:
    return False  # unreadable: being written; look again later
  if claim.get('state') == 'released':
    return True
  return claim.get('state') == 'running' and is_dead(claim, at)


def atomic_create(path, text):
  """Creates `path` holding `text` unless it exists; whether it did."""
  if '://' in os.fspath(path):
    if path.exists():
      return False
    path.write_text(text)
    return path.read_text() == text
  private = path.with_name(f'{path.name}.{socket.gethostname()}.'
                           f'{os.getpid()}.{uuid.uuid4().hex[:8]}')
  private.write_text(text)
  try:
    os.link(private, path)
    return True
  except FileExistsError:
    return False
  finally:
    private.unlink()


def replace(path, claim):
  """Writes `claim` over `path` whole (a reader sees the old or the new)."""
  temporary = path.with_name(f'{path.name}.{uuid.uuid4().hex[:8]}.tmp')
  temporary.write_text(json.dumps(claim, indent=1))
  temporary.replace(path)


class Claim:
  """This process's claim on one run, from `take` to `finish`."""

  def __init__(self, path, holder, attempts):
    self.path = path
    self.holder = holder
    self.attempts = attempts
    self.child_pid = None
    self._last_beat = 0.0

  def _content(self, state, **extra):
    return {'state': state, 'holder': self.holder,
            'child_pid': self.child_pid, 'heartbeat': now(),
            'attempts': self.attempts, **extra}

  def still_mine(self):
    claim = read(self.path)
    return bool(claim) and claim.get('holder') == self.holder

  def beat(self, child_pid=None, force=False):
    """Refreshes the heartbeat (at most every HEARTBEAT_SECONDS unless
    `force`); False when another process has taken the claim over."""
    if child_pid is not None:
      self.child_pid = child_pid
    if not force and now() - self._last_beat < HEARTBEAT_SECONDS:
      return True
    if not self.still_mine():
      return False
    replace(self.path, self._content('running'))
    self._last_beat = now()
    return True

  def finish(self, state, outcome, reason='', step=None, result=None):
    """Ends the attempt: state 'done', 'failed' or 'released'."""
    attempt = {'host': self.holder['host'], 'pid': self.holder['pid'],
               'task': self.holder['task'], 'started': self.holder['started'],
               'seconds': round(now() - self.holder['started_at'], 1),
               'outcome': outcome, 'reason': reason, 'step': step}
    self.attempts = self.attempts + [attempt]
    if self.still_mine():
      extra = {'result': result} if result is not None else {}
      if reason:
        extra['reason'] = reason
      self.child_pid = None
      replace(self.path, self._content(state, **extra))


def take(workdir, run_name, task, at=None):
  """A `Claim` on the run for this process, or None when another process
  holds it or it is finished."""
  path = path_of(workdir, run_name)
  path.parent.mkdir(parents=True, exist_ok=True)
  started_at = now()
  holder = {'pid': os.getpid(), 'host': socket.gethostname(), 'task': task,
            'started': _iso(started_at), 'started_at': started_at}
  current = read(path)
  if current is None:
    claim = Claim(path, holder, [])
    if atomic_create(path, json.dumps(claim._content('running'), indent=1)):  # pylint: disable=protected-access
      return claim
    current = read(path)
  if not takeable(current, at):
    return None
  judged = json.dumps(current, sort_keys=True)
  digest = hashlib.sha256(judged.encode()).hexdigest()[:16]
  marker = path.with_name(f'{path.name}.take-{digest}')
  if not atomic_create(marker, json.dumps(holder)):
    return None
  if json.dumps(read(path), sort_keys=True) != judged:
    return None
  claim = Claim(path, holder, list(current.get('attempts', [])))
  replace(path, claim._content('running'))  # pylint: disable=protected-access
  return claim
