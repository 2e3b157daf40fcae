"""Preemption: a SIGTERM (or Ctrl-C) ends the run at a step boundary, checkpointed.

Schedulers announce an eviction with SIGTERM and kill some seconds later (Cloud TPU
VMs, Slurm's `--signal`, Kubernetes' grace period). Without a handler the process dies
at once and a restart redoes every step since the last periodic checkpoint (up to
`checkpoint_every_steps` of them). With one, the training loop finishes the step it is
in, saves that step's checkpoint synchronously and returns; train.py exits 0.

One process: SIGTERM and SIGINT set a flag that the loop reads after each step; a
second SIGINT interrupts at once (KeyboardInterrupt), for a user who does not want to
wait for the save.

Several processes (`jax.distributed` initialized): every process must save the same
step, and a signal reaches the processes at different moments (or only one of them).
JAX's preemption service (on by default in `jax.distributed.initialize`) catches SIGTERM
on any process, agrees with the others on a step all of them have not passed yet, and
`multihost_utils.reached_preemption_sync_point(step)` is true on every process at that
same step. That service owns SIGTERM there, so no Python handler is installed for it;
SIGINT keeps its default (an interrupt without a save: a single process's Ctrl-C cannot
be agreed on without a collective every step).
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _distributed() -> bool:
  return jax.process_count() > 1


class PreemptionWatch:
  """Tells the loop, after each step, whether to checkpoint and stop."""

  def __init__(self):
    self.reason: str | None = None  # What asked the run to stop, once something did.
    self._previous = {}
    if _distributed() or threading.current_thread() is not threading.main_thread():
      return  # JAX's service owns SIGTERM; Python handlers can only be set on the main thread.
    for signum in SIGNALS:
      self._previous[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    if self.reason is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop now, without the save.
    self.reason = f'{signal.Signals(signum).name} received'

  def reached(self, step: int) -> bool:
    """Whether the run must save `step` (just completed) and stop. Called by every
    process after every step (the multi-process protocol needs each step)."""
    if _distributed():
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = "A preemption notice (SIGTERM to a process, JAX's preemption service)"
        return True
      return False
    return self.reason is not None

  def close(self):
    """Puts back the handlers that were there before."""
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
