"""Sequence-length warm-up (Li et al. 2022, "The Stability-Efficiency Dilemma:
Investigating Sequence Length Warmup for Training GPT Models"): pretraining rows start
short and grow linearly to the full length, by truncation.

Step s trains rows of

  length(s) = seq_len                                              for s >= steps
            = max(start, floor((start + (seq_len - start) s / steps) / multiple) multiple)

tokens, the first length(s) of each packed row (the rest of the row is dropped, as in the
paper's truncation: the batch keeps its number of rows, so early steps see fewer tokens).
Rounding to `multiple` keeps the distinct shapes, and so the compilations of the train
step, to about seq_len / multiple. Every figure is a function of the step alone, so a
resumed run cuts the same rows and counts the same tokens.
"""

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class LengthWarmup:
  seq_len: int  # The full row length, reached at `steps`.
  steps: int  # Warm-up steps (T).
  start: int  # Row length at step 0.
  multiple: int  # Lengths are rounded down to a multiple of this (start excepted).

  def __post_init__(self):
    if self.steps < 1:
      raise ValueError(f'length_warmup.steps={self.steps}: a warm-up needs at least 1 step.')
    if not 1 <= self.start <= self.seq_len:
      raise ValueError(
        f'length_warmup.start={self.start} must be between 1 and seq_len={self.seq_len}.'
      )
    if self.multiple < 1:
      raise ValueError(f'length_warmup.multiple={self.multiple} must be at least 1.')

  @functools.cached_property
  def _lengths(self) -> np.ndarray:
    """[steps] the row length of every warm-up step, and [steps + 1] their running sum."""
    s = np.arange(self.steps, dtype=np.float64)
    grown = self.start + (self.seq_len - self.start) * s / self.steps
    lengths = np.clip(np.floor(grown / self.multiple) * self.multiple, self.start, self.seq_len)
    return lengths.astype(np.int64), np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])

  def length(self, step: int) -> int:
    """Tokens per row at `step` (0-based)."""
    return self.seq_len if step >= self.steps else int(self._lengths[0][step])

  def tokens_before(self, step: int, batch_size: int) -> int:
    """Row positions trained by steps 0 .. step - 1 (batch_size rows a step)."""
    warm = min(step, self.steps)
    return batch_size * (int(self._lengths[1][warm]) + (step - warm) * self.seq_len)


def cut_rows(batch: dict, length: int, seq_len: int) -> dict:
  """The batch with every per-token array ([rows, seq_len, ...]) cut to its first `length`
  positions; per-row arrays (labels, epochs, ids) are kept."""
  return {
    key: value[:, :length] if value.ndim >= 2 and value.shape[1] == seq_len else value
    for key, value in batch.items()
  }
