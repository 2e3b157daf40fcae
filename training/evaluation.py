"""Held-out evaluation: one pass over the eval split (or `eval_steps` batches)."""

import json
import os

import jax
import numpy as np

from data import tasks
from objectives import metrics as metrics_lib
from training import best_checkpoint, partitioning
from training import run as run_lib


def evaluate(run: run_lib.Run, params, eval_step) -> dict:
  """Averaged metrics (plus the objective's derived figures) over the eval split.

  Every process steps in lockstep: a process whose shards end early feeds
  all-padding rows, and the loop stops at the first global batch with no
  real row (or after `config.eval_steps` batches when it is positive).
  """
  exp, batch_sharding, max_steps = run.exp, run.batch_sharding, run.config.eval_steps
  loader = exp.loader('eval', run.shards, pad_after_end=True)
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


def is_task(objective) -> bool:
  """A downstream-task objective scores predictions over the whole split (F1, MCC, ...)."""
  return hasattr(objective, 'predict_fn')


def predict_split(run: run_lib.Run, params, predict_step, eval_split: str) -> dict:
  """Per-example outputs of `predict_step` over one eval split, in loader order.

  Returns:
    {name: np.ndarray [examples, ...]} with 'example_id' (the record index); the
    padding rows of the last batch (example_id -1) are dropped, so every example
    of the split appears exactly once.
  """
  loader = run.exp.loader('eval', run.shards, eval_split=eval_split, pad_after_end=True)
  parts = []
  while True:
    batch = next(loader)
    outputs = predict_step(params, partitioning.global_batch(batch, run.batch_sharding))
    outputs = jax.tree.map(np.asarray, outputs)  # Replicated: every process holds all rows.
    keep = outputs['example_id'] >= 0
    if not keep.any():
      break
    parts.append({name: value[keep] for name, value in outputs.items()})
  if not parts:
    raise ValueError(f'The evaluation split {eval_split!r} produced no example: is it empty?')
  return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def evaluate_task(run: run_lib.Run, params, predict_step) -> dict:
  """The task's metrics on each of its eval splits (data/tasks.eval_splits).

  Returns:
    {'metrics': {name: value}, 'scores': {column: fraction}, 'examples': {split: n}};
    with several splits of a task (MNLI matched / mismatched) the names get the split's
    suffix ('mnli_m', 'mnli_mm'); a multi-task set's per-task splits ('rte:dev') none.
  """
  config, objective = run.config, run.exp.objective
  splits = tasks.eval_splits(config.data)
  result = {'metrics': {}, 'scores': {}, 'examples': {}}
  for split in splits:
    outputs = predict_split(run, params, predict_step, split)
    records = run.exp.documents('eval', split)
    _check_coverage(outputs, len(records), split)
    values = objective.evaluate_predictions(config.objective, outputs, records)
    suffix = _split_suffix(split, splits)
    result['metrics'].update({k + suffix: v for k, v in values['metrics'].items()})
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


def _split_suffix(split: str, splits: list[str]) -> str:
  """What tells a split's metric names apart from the other splits' of the same task:
  nothing for a task's only split, else '_' and the split's short name. A multi-task
  set's splits are 'task:split' (data/tasks.py), whose objective names each task itself."""
  task, _, name = split.rpartition(':')
  if sum(other.rpartition(':')[0] == task for other in splits) < 2:
    return ''
  return '_' + _SPLIT_SUFFIX.get(name, name)


def evaluate_checkpoint(config, workdir: str) -> dict:
  """Evaluates a run and writes `<workdir>/eval.json`; returns the figures.

  Pretraining objectives: the newest checkpoint on the held-out split. Task objectives:
  the best checkpoint (`<workdir>/best`, kept during fine-tuning), or the newest when
  the run kept none, on every eval split; eval.json then carries what the results
  table gathers (benchmark, task, seed, scores, the config's published reference).
  Where the config leaves the checkpoint or a data location empty, the run's own
  (its config.json) is used, so `eval.py --config configs/glue.py:sst2 --workdir DIR`
  needs no more flags than training had.
  """
  _fill_from_run(config, workdir)
  run = run_lib.Run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {run.checkpointer.directory}: train first.')
  abstract, shardings = run.abstract_state()
  state, _, meta = run.checkpointer.restore(step, abstract)
  run.checkpointer.close()
  run_lib.check_tokenizer(meta, run.exp, run.checkpointer.directory)
  if is_task(run.exp.objective):
    result = _evaluate_task_run(run, workdir, state.params, abstract.params, shardings.params)
    rows = {**result['metrics'], **{f'score/{k}': v for k, v in result['scores'].items()}}
    rows = {'step': result['step'], 'checkpoint': result['checkpoint'], **rows}
  else:
    values = evaluate(run, state.params, run.eval_step(shardings.params))
    result = rows = {'step': step, 'objective': config.objective.module, **values}
  if jax.process_index() == 0:
    print(f'{"metric":<16} {"value":>12}')
    for name, value in rows.items():
      text = f'{value:>12.4f}' if isinstance(value, float) else f'{value!s:>12}'
      print(f'{name:<16} {text}')
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
      json.dump(result, f, indent=2)
  return result


# Where a run's model and data come from: taken from its config.json when left empty.
_RUN_LOCATIONS = ('init_from', 'data.tokenizer_path', 'data.glue_dir', 'data.conll_dir',
                  'data.squad_file', 'data.eval_squad_file', 'data.clue_dir')  # fmt: skip


def _fill_from_run(config, workdir: str) -> None:
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    return
  with open(path) as f:
    saved = json.load(f)
  for key in _RUN_LOCATIONS:
    *parents, name = key.split('.')
    node, saved_node = config, saved
    for parent in parents:
      node, saved_node = node[parent], saved_node.get(parent, {})
    if name in node and not node[name] and saved_node.get(name):
      node[name] = saved_node[name]
      print(f'{key} = {saved_node[name]} (from {path})')


def _evaluate_task_run(run, workdir: str, latest_params, abstract_params, param_shardings):
  best = best_checkpoint.BestCheckpoint(workdir)
  if best.step() is not None:
    step, checkpoint, params = best.step(), 'best', best.restore_params(abstract_params)
  else:
    step, checkpoint, params = run.checkpointer.latest_step(), 'latest', latest_params
  best.close()
  values = evaluate_task(run, params, run.predict_step(param_shardings))
  config = run.config
  reference = config.get('reference', None)
  return {
    'step': step,
    'checkpoint': checkpoint,
    'objective': config.objective.module,
    'benchmark': config.get('benchmark', '') or config.data.source,
    'task': config.objective.get('task', '') or config.data.get('task', ''),
    'seed': config.seed,
    'model': config.get('init_from', '') or config.model.preset,
    'metrics': values['metrics'],
    'scores': values['scores'],
    'examples': values['examples'],
    'reference': None if reference is None else reference.to_dict(),
  }
