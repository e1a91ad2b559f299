"""Clean stops on SIGTERM (what SLURM and preemption send) and SIGINT
(Ctrl-C): the current step finishes, a checkpoint is saved, and the run ends
with `Interrupted`. A second signal of the same kind acts at once, as it
would without this module.
"""
import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """The run stopped on a signal after saving `step`."""

  def __init__(self, step, signum):
    super().__init__(f'interrupted at step {step}; resume with the same '
                     'command')
    self.step = step
    self.signum = signum

  @property
  def exit_code(self):
    """128 + the signal number, as a shell reports a process it signalled."""
    return 128 + self.signum


class StopRequest:
  """Records SIGTERM/SIGINT while the block runs (main thread only: signal
  handlers can be set nowhere else), and restores the previous handlers."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    signal.signal(signum, self._previous[signum])
    logging.warning('%s received: finishing the step and saving a checkpoint '
                    '(send it again to stop at once).',
                    signal.Signals(signum).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in _SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def requested(self):
    """Whether any process of the run has been asked to stop; every process
    answers alike, so that all save the same step."""
    if jax.process_count() == 1:
      return self.signum is not None
    signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
    if self.signum is None and signums.any():
      self.signum = int(signums[signums > 0][0])
    return bool(signums.any())
