"""The evaluation loops: held-out loss of a pretraining objective, predictions of a task.

`evaluate` averages a pretraining objective's (sum, weight) metrics over the eval split.
`evaluate_task` predicts every example of each of a task's eval splits exactly once
(the loader pads the last batch; padding rows are dropped), decodes the predictions
with the objective and scores them with the benchmark's metrics (task_scores.py).
"""

import jax
import numpy as np

from data import tasks
from evaluation import task_scores
from objectives.shared import metrics as metrics_lib
from training import partitioning
from training.harness import Harness


def evaluate(harness: Harness, params, eval_step) -> dict:
  """Averaged metrics (plus the objective's derived figures) over the eval split.

  Every process steps in lockstep: a process whose shards end early feeds
  all-padding rows, and the loop stops at the first global batch with no
  real row (or after `config.eval_steps` batches when it is positive).
  """
  exp, batch_sharding, max_steps = harness.exp, harness.batch_sharding, harness.config.eval_steps
  loader = exp.loader('eval', harness.shards, pad_after_end=True)
  total, batches = None, 0
  while not max_steps or batches < max_steps:
    step_metrics = eval_step(params, partitioning.global_batch(next(loader), batch_sharding))
    if float(step_metrics['rows'][0]) == 0:
      break
    total = step_metrics if total is None else metrics_lib.add(total, step_metrics)
    batches += 1
  if total is None:
    raise ValueError('The evaluation split produced no batch: is it empty?')
  rows = float(total.pop('rows')[0])
  values = exp.objective.eval_summary(metrics_lib.summarize(total))
  return {**values, 'batches': batches, 'rows': rows}


def predict_split(harness: Harness, params, predict_step, eval_split: str) -> dict:
  """Per-example outputs of `predict_step` over one eval split, in loader order.

  Returns:
    {name: np.ndarray [examples, ...]} with 'example_id' (the record index); the
    padding rows of the last batch (example_id -1) are dropped, so every example
    of the split appears exactly once.
  """
  loader = harness.exp.loader('eval', harness.shards, eval_split=eval_split, pad_after_end=True)
  parts = []
  while True:
    batch = next(loader)
    outputs = predict_step(params, partitioning.global_batch(batch, harness.batch_sharding))
    outputs = jax.tree.map(np.asarray, outputs)  # Replicated: every process holds all rows.
    keep = outputs['example_id'] >= 0
    if not keep.any():
      break
    parts.append({name: value[keep] for name, value in outputs.items()})
  if not parts:
    raise ValueError(f'The evaluation split {eval_split!r} produced no example: is it empty?')
  return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def evaluate_task(harness: Harness, params, predict_step) -> dict:
  """The task's metrics on each of its eval splits (data/tasks.eval_splits).

  Returns:
    {'metrics': {name: value}, 'scores': {column: fraction}, 'examples': {split: n}};
    with several splits of a task (MNLI matched / mismatched) the names get the split's
    suffix ('mnli_m', 'mnli_mm'); a multi-task set's per-task splits ('rte:dev') get the
    task as a prefix of the metric names ('rte_accuracy'), their columns are the tasks.
  """
  config, objective = harness.config, harness.exp.objective
  splits = tasks.eval_splits(config.data)
  result = {'metrics': {}, 'scores': {}, 'examples': {}}
  for split in splits:
    outputs = predict_split(harness, params, predict_step, split)
    records = harness.exp.documents('eval', split)
    _check_coverage(outputs, len(records), split)
    decoded = objective.decode_predictions(config.objective, outputs, records)
    values = task_scores.score(decoded)
    prefix, suffix = _metric_affixes(split, splits)
    result['metrics'].update({prefix + k + suffix: v for k, v in values['metrics'].items()})
    result['scores'].update({k + suffix: v for k, v in values['scores'].items()})
    result['examples'][split] = len(records)
  return result


def _check_coverage(outputs: dict, num_records: int, split: str) -> None:
  """Every example of the split was predicted, and no row twice: an example's rows
  (one, or one per window: `feature_index`) each appear exactly once."""
  ids = outputs['example_id']
  keys = np.stack([ids, outputs.get('feature_index', np.zeros_like(ids))], axis=-1)
  distinct = np.unique(ids)
  if len(np.unique(keys, axis=0)) != len(ids) or not np.array_equal(
    distinct, np.arange(num_records)
  ):
    raise AssertionError(
      f'Evaluation saw {len(ids)} rows of {len(distinct)} distinct examples; split {split!r} '
      f'has {num_records} examples.'
    )


# Short names of evaluation splits in score columns (the GLUE table's MNLI-m / MNLI-mm).
_SPLIT_SUFFIX = {'dev_matched': 'm', 'dev_mismatched': 'mm'}


def _metric_affixes(split: str, splits: list[str]) -> tuple[str, str]:
  """(prefix, suffix) that tell a split's metric names apart from the other splits'.

  A multi-task set's splits are 'task:split' (data/tasks.py): their metrics get the task
  as a prefix ('rte_accuracy'). Several splits of one task (MNLI matched / mismatched) get
  '_' and the split's short name as a suffix ('accuracy_m'); a task's only split none.
  """
  task, _, name = split.rpartition(':')
  prefix = f'{task}_' if task else ''
  if sum(other.rpartition(':')[0] == task for other in splits) < 2:
    return prefix, ''
  return prefix, '_' + _SPLIT_SUFFIX.get(name, name)
