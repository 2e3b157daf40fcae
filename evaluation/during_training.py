"""Evaluation while training: what train.py runs, the training loop with its evaluator.

`train_and_evaluate(config, workdir)` runs training/trainer.train with the evaluator of
the run's objective, called every `eval_every_steps` and at the last step
(`train_to_completion`, for callers that go on to score or record the finished run,
raises RunStopped when a signal stopped it first):

- a pretraining objective: the held-out loss, accuracy and the objective's derived
  figures (perplexity) over the eval split (evaluation/loop.evaluate);
- a fine-tuning task: the task's metrics on each eval split (evaluation/loop.evaluate_task);
  the params of the best evaluation by the first score column are kept in
  `<workdir>/best` (BERT's and ELECTRA's protocol reports the best of a run's
  evaluations), and `best_step` is logged when an evaluation improves on it.
"""

from collections.abc import Callable

from evaluation import loop
from objectives import api
from training import best_checkpoint, trainer
from training.harness import Harness


class HeldOutEvaluator:
  """The held-out loss of a pretraining objective."""

  def __init__(self, harness: Harness, shardings):
    self._harness = harness
    self._step = harness.eval_step(shardings.params)

  def __call__(self, step: int, params) -> dict[str, float]:
    del step
    return loop.evaluate(self._harness, params, self._step)

  def close(self) -> None:
    pass


class TaskEvaluator:
  """A task's dev scores; keeps the best evaluation's params in `<workdir>/best`."""

  def __init__(self, harness: Harness, shardings):
    self._harness = harness
    self._step = harness.predict_step(shardings.params)
    self._best = best_checkpoint.BestCheckpoint(harness.workdir)

  def __call__(self, step: int, params) -> dict[str, float]:
    result = loop.evaluate_task(self._harness, params, self._step)
    values = {**result['metrics'], **result['scores']}
    if self._best.update(step, params, next(iter(result['scores'])), result):
      values['best_step'] = step
    return values

  def close(self) -> None:
    self._best.close()


def make_evaluator(harness: Harness, shardings) -> trainer.Evaluator:
  """The evaluator of the run's objective (a training/trainer.EvaluatorFactory)."""
  if api.is_task(harness.exp.objective):
    return TaskEvaluator(harness, shardings)
  return HeldOutEvaluator(harness, shardings)


def train_and_evaluate(
  config, workdir: str, after_step: Callable[[int], None] | None = None
) -> dict:
  """Trains `config` in `workdir` (resuming from its newest checkpoint), evaluating every
  `config.eval_every_steps`; returns the last logged training figures."""
  return trainer.train(config, workdir, make_evaluator=make_evaluator, after_step=after_step)


class RunStopped(RuntimeError):
  """A run stopped before its last step (SIGTERM, SIGINT: its checkpoint saved)."""


def train_to_completion(
  config, workdir: str, after_step: Callable[[int], None] | None = None
) -> dict:
  """train_and_evaluate for callers that go on to use the finished run (benchmarks,
  tools): a run a signal stopped before `config.total_steps` raises RunStopped instead of
  returning, so no half-trained checkpoint is scored or recorded as the run's result; the
  same call resumes it from its checkpoint.

  Raises:
    RunStopped: the run stopped early.
  """
  logged = train_and_evaluate(config, workdir, after_step)
  if logged['step'] < config.total_steps:
    raise RunStopped(
      f'{workdir}: stopped at step {logged["step"]} of {config.total_steps} (its checkpoint '
      'saved); run the same command again to finish it.'
    )
  return logged
