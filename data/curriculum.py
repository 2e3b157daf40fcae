"""Curriculum learning as a loader stage: easy documents first, the harder ones admitted as
training goes on.

A difficulty score per train document (higher is harder: its length in tokens, or any
score in a file, such as a reference model's loss on it) orders each shard's documents;
the competence c(t) in (0, 1] at training progress t is the fraction of them, easiest
first, that may be drawn; each draw is uniform over the admitted documents (Platanios et
al. 2019, "Competence-based curriculum learning for neural machine translation",
section 3). Schedules, with T = `steps` and c0 = `initial`:

  sqrt        c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2))   (Platanios et al.'s c_sqrt)
  linear      c(t) = min(1, t (1 - c0) / T + c0)
  baby_steps  c(t) = min(1, (floor(t k / T) + 1) / k)       k = `stages` equal buckets,
              one more admitted every T / k steps (Bengio et al. 2009; Cirik et al. 2016)

Progress t counts draws: draw i of a shard is taken at step i // draws_per_step (the rows
per shard per step; exact for the task objectives, one row per record; a packed pretraining
row holds several documents, so there t runs ahead of the step). Which document draw i
gets is a function of (seed, shard, i) alone, so the stage is random access and a restored
loader continues exactly (its state is the draw index, as for the plain shuffle). After T
the draws stay uniform over the whole shard, with replacement, as in the paper; they do
not return to epoch-wise shuffling.
"""

import dataclasses
import math

import numpy as np

from data import tasks

SCHEDULES = ('sqrt', 'linear', 'baby_steps')


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """A difficulty per train document (the corpus order) and the competence schedule."""

  difficulty: np.ndarray  # [documents] float; higher is harder.
  schedule: str
  steps: int  # T: the step at which every document is admitted.
  initial: float = 0.01  # c0 of sqrt and linear.
  stages: int = 4  # k of baby_steps.

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f'curriculum.schedule={self.schedule!r} is not one of {SCHEDULES}.')
    if self.steps < 1:
      raise ValueError(f'curriculum.steps={self.steps}: the curriculum needs at least 1 step.')
    if not 0.0 < self.initial <= 1.0:
      raise ValueError(f'curriculum.initial={self.initial} must be in (0, 1].')
    if self.stages < 1:
      raise ValueError(f'curriculum.stages={self.stages} must be at least 1.')
    if not np.all(np.isfinite(self.difficulty)):
      raise ValueError('The curriculum difficulty scores must be finite numbers.')

  def competence(self, t: float) -> float:
    """The fraction of each shard admitted at progress `t` steps."""
    if t >= self.steps:
      return 1.0
    if self.schedule == 'sqrt':
      return min(1.0, math.sqrt(t * (1 - self.initial**2) / self.steps + self.initial**2))
    if self.schedule == 'linear':
      return min(1.0, t * (1 - self.initial) / self.steps + self.initial)
    return min(1.0, (math.floor(t * self.stages / self.steps) + 1) / self.stages)

  def shard_order(self, shard: int, num_shards: int) -> np.ndarray:
    """The shard's documents (positions within the shard), easiest first; equal scores keep
    the corpus order."""
    return np.argsort(self.difficulty[shard::num_shards], kind='stable')

  def admitted(self, t: float, shard_size: int) -> int:
    """How many of a shard's easiest documents may be drawn at progress `t` (at least 1)."""
    return max(1, min(shard_size, math.ceil(self.competence(t) * shard_size - 1e-9)))


def draw(curriculum: Curriculum, order: np.ndarray, i: int, *, seed: int, shard: int,
         draws_per_step: int) -> int:  # fmt: skip
  """The shard position that draw `i` takes: uniform over the admitted easiest documents."""
  admitted = curriculum.admitted(i // draws_per_step, len(order))
  pick = np.random.default_rng([seed, shard, i]).integers(admitted)
  return int(order[pick])


def token_lengths(documents, tokenizer) -> np.ndarray:
  """[documents] tokens per document: a text's pieces, a task record's text_a plus text_b,
  or a tagged record's words (CoNLL)."""
  out = np.zeros(len(documents), np.float64)
  for i, doc in enumerate(documents):
    if isinstance(doc, dict) and 'words' in doc:
      out[i] = sum(len(tokenizer.encode(w)) for w in doc['words'])
    elif isinstance(doc, dict):
      out[i] = len(tokenizer.encode(doc['text_a']))
      if doc.get('text_b'):
        out[i] += len(tokenizer.encode(doc['text_b']))
    else:
      out[i] = len(tokenizer.encode(str(doc)))
  return out


def read_scores(path: str, count: int) -> np.ndarray:
  """One float per train document, in corpus order, from `path` ('#' comments allowed).

  Raises:
    ValueError: a line that is not a number, or a count other than `count`.
  """
  values = tasks.read_listed(path, float, 'a difficulty score')
  if len(values) != count:
    raise ValueError(
      f'{path} holds {len(values)} difficulty scores; the train split has {count} documents '
      '(one score per document, in file order).'
    )
  return np.asarray(values, np.float64)
