"""Held-out evaluation: one pass over the eval split (or `eval_steps` batches)."""

import json
import os

import jax

from objectives import metrics as metrics_lib
from training import partitioning
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


def evaluate_checkpoint(config, workdir: str) -> dict:
  """Restores the newest checkpoint in `workdir` and evaluates it; returns the figures."""
  run = run_lib.Run(config, workdir)
  step = run.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {run.checkpointer.directory}: train first.')
  abstract, shardings = run.abstract_state()
  state, _, meta = run.checkpointer.restore(step, abstract)
  run.checkpointer.close()
  run_lib.check_tokenizer(meta, run.exp, run.checkpointer.directory)
  values = evaluate(run, state.params, run.eval_step(shardings.params))
  result = {'step': step, 'objective': config.objective.module, **values}
  if jax.process_index() == 0:
    print(f'{"metric":<12} {"value":>12}')
    for name, value in result.items():
      text = f'{value:>12.4f}' if isinstance(value, float) else f'{value!s:>12}'
      print(f'{name:<12} {text}')
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
      json.dump(result, f, indent=2)
  return result
