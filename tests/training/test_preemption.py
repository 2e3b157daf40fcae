"""PreemptionWatch on one process: a signal is noted for the loop, a second Ctrl-C
interrupts at once, and the handlers in place before are put back."""

import os
import signal

import pytest

from training import preemption


def test_sigterm_is_noted_for_the_next_step_boundary():
  before = signal.getsignal(signal.SIGTERM)
  watch = preemption.PreemptionWatch()
  try:
    assert not watch.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)  # Handled: the process goes on.
    assert watch.reached(2) and watch.reason == 'SIGTERM received'
  finally:
    watch.close()
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_interrupts_without_waiting():
  before = signal.getsignal(signal.SIGINT)
  watch = preemption.PreemptionWatch()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert watch.reached(1) and watch.reason == 'SIGINT received'
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  finally:
    watch.close()
  assert signal.getsignal(signal.SIGINT) is before
