"""Skipped updates, seen from the host: how many in a row, and when a run has diverged.

The train step (training/state.py) leaves the params as they were when a step's loss or
gradient is not finite (or its loss spikes) and flags the step in its metrics
(`state.SKIP_METRICS`). One skipped batch is a glitch; every batch skipped means the
params themselves give NaN, and skipping more batches will not bring them back: the
run would consume its data and keep writing checkpoints of params that no longer train.
The loop therefore counts skipped steps in a row with a `BadStepCounter` and stops the
run at `max_bad_steps`. It reads each step's flag one step late, when that step is done,
so reading it does not make the host wait for the device.
"""

import math

import jax

from training import state as state_lib


class TrainingDivergedError(RuntimeError):
  """`max_bad_steps` updates in a row were skipped."""


def skipped_flag(step_metrics: dict) -> tuple[jax.Array, ...]:
  """The step's skip flags (device scalars, 1.0 when its update was skipped as
  non-finite, or as a spike): give them to `BadStepCounter.update` once the step is done,
  e.g. the previous step's, lagged. Left on the device, unsummed: an eager sum would be
  one more dispatch per step."""
  return tuple(step_metrics[name][0] for name in state_lib.SKIP_METRICS)


class BadStepCounter:
  """Counts skipped updates in a row; `check` raises once there were `max_bad_steps`.

  Feed it every step's flag in step order (lagged by one step is fine: feed the last
  step's flag after the loop too). An applied step resets the count.
  """

  def __init__(self, max_bad_steps: int):
    if max_bad_steps < 1:
      raise ValueError(
        f'max_bad_steps={max_bad_steps}: it must be >= 1 (the skipped updates in a row '
        'that stop a run).'
      )
    self.max_bad_steps = max_bad_steps
    self.consecutive = 0

  def update(self, flag) -> int:
    """Adds one step's flag (a number, or a tuple of them as `skipped_flag` gives; > 0:
    its update was skipped); returns the count in a row."""
    flags = flag if isinstance(flag, tuple) else (flag,)
    self.consecutive = self.consecutive + 1 if sum(float(f) for f in flags) > 0 else 0
    return self.consecutive

  def add(self, flag, step: int) -> None:
    """`update` with step `step`'s flag, then `check`: what the loop does each step."""
    self.update(flag)
    self.check(step)

  @property
  def exceeded(self) -> bool:
    return self.consecutive >= self.max_bad_steps

  def check(self, step: int):
    """Raises TrainingDivergedError when the steps up to `step` (the last one fed) end
    in `max_bad_steps` skipped updates."""
    if not self.exceeded:
      return
    first = step - self.consecutive + 1
    raise TrainingDivergedError(
      f'The updates of steps {first}..{step} ({self.consecutive} in a row, max_bad_steps='
      f'{self.max_bad_steps}) were all skipped: their loss or gradient was not finite (or '
      'spiked, see loss_spike_zscore), so the params no longer train. Checkpoints from '
      f'step {first - 1} on hold the params of step {first - 1}. Start again, or resume '
      'from an earlier checkpoint, with a lower optimizer.learning_rate (or longer warmup, '
      'or gradient clipping).'
    )


def interval_figures(values: dict[str, float]) -> dict[str, float]:
  """A log interval's summarized metrics, with every figure but the skip fractions NaN
  when all its steps were skipped.

  A skipped step's metrics have weight 0, so such an interval's figures are 0 / 0, which
  `metrics.summarize` turns into 0.0: a loss of 0.0 would read as a perfect step. NaN
  says there is no figure (metrics.jsonl writes it as null, flagged).
  """
  skipped = sum(values[name] for name in state_lib.SKIP_METRICS if name in values)
  if skipped < 1.0 - 1e-6:
    return values
  return {k: v if k in state_lib.SKIP_METRICS else math.nan for k, v in values.items()}
