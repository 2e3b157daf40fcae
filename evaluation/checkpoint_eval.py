"""Evaluates a finished (or interrupted) run from its checkpoints: what `eval.py` runs.

A pretraining run: the held-out loss, accuracy and perplexity of its newest checkpoint.
A fine-tuning run: its task's metrics on every eval split, of the best checkpoint kept
during training (`<workdir>/best`), else of the newest. Either way the figures are
printed as a table and written to `<workdir>/eval.json`, which the results table
(results_table.py) gathers.
"""

import json
import os

import jax

from evaluation import best_checkpoint, loop
from objectives import api
from training import harness as harness_lib
from training.harness import Harness


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
  harness = Harness(config, workdir)
  step = harness.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {harness.checkpointer.directory}: train first.')
  abstract, shardings = harness.abstract_state()
  # The tokenizer first, from the checkpoint's meta alone: another tokenizer sizes another
  # model, which the restore would otherwise reject with a shape error.
  meta = harness.checkpointer.read_meta(step)
  harness_lib.check_tokenizer(meta, harness.exp, harness.checkpointer.directory)
  state, _, _ = harness.checkpointer.restore(step, abstract)  # Verified against its digests.
  harness.checkpointer.close()
  if api.is_task(harness.exp.objective):
    result = _evaluate_task_run(harness, workdir, state.params, abstract.params, shardings.params)
    rows = {**result['metrics'], **{f'score/{k}': v for k, v in result['scores'].items()}}
    rows = {'step': result['step'], 'checkpoint': result['checkpoint'], **rows}
  else:
    values = loop.evaluate(harness, state.params, harness.eval_step(shardings.params))
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


def _evaluate_task_run(harness, workdir: str, latest_params, abstract_params, param_shardings):
  best = best_checkpoint.BestCheckpoint(workdir)
  if best.step() is not None:
    step, checkpoint, params = best.step(), 'best', best.restore_params(abstract_params)
  else:
    step, checkpoint, params = harness.checkpointer.latest_step(), 'latest', latest_params
  best.close()
  values = loop.evaluate_task(harness, params, harness.predict_step(param_shardings))
  config = harness.config
  return {
    'step': step,
    'checkpoint': checkpoint,
    'objective': config.objective.module,
    'benchmark': config.benchmark or config.data.source,
    'task': config.objective.task or config.data.task,
    'seed': config.seed,
    'model': config.init_from or config.model.preset,
    'metrics': values['metrics'],
    'scores': values['scores'],
    'examples': values['examples'],
    'reference': None if config.reference.scores is None else config.reference.to_dict(),
  }
