"""Evaluates a finished (or interrupted) run from its checkpoints: what `eval.py` runs.

A pretraining run: the held-out loss, accuracy and perplexity of its newest checkpoint.
A fine-tuning run: its task's metrics on every eval split, of the best checkpoint kept
during training (`<workdir>/best`), else of the newest. Either way the figures are
printed as a table and written to `<workdir>/eval.json`, which the results table
(results_table.py) gathers. A directory compress.py wrote (training/compressed_run.py) is
evaluated the same way, with its compressed model's params (checkpoint 'compressed').
"""

import dataclasses
import json
import os

import jax

from data import atomic_files
from evaluation import during_training, loop
from objectives import api
from training import best_checkpoint, compressed_run, model_setup, pretrained
from training import harness as harness_lib
from training import state as state_lib
from training.harness import Harness


@dataclasses.dataclass
class EvalParams:
  """The params eval.py scores, and where they come from."""

  harness: Harness
  params: dict  # Placed on the harness's mesh.
  shardings: dict  # Their NamedShardings.
  step: int  # The step they were trained to (a compressed run: its source's).
  checkpoint: str  # 'best', 'latest' or 'compressed'.
  compression: str = ''  # compress.py's method, for a compressed run.


def load_eval_params(config, workdir: str) -> EvalParams:
  """The params of run `workdir` that eval.py scores: a fine-tuning run's best checkpoint
  (`<workdir>/best`) when it kept one, else the newest checkpoint (verified against its
  digests); a directory compress.py wrote, its compressed model's params alone (no
  train state: no optimizer is built on int8 weights). Locations the config leaves
  empty are filled from the run's config.json first (`_fill_from_run`).
  """
  _fill_from_run(config, workdir)
  harness = Harness(config, workdir)
  if compressed_run.is_compressed(workdir):
    harness.checkpointer.close()
    report = compressed_run.read_report(workdir)
    params, shardings, _ = compressed_run.load_params(
      workdir,
      harness.model,
      mesh=harness.mesh,
      rules=harness.rules,
      seq_len=harness.config.seq_len,
      tokenizer_sha256=harness.exp.tokenizer.fingerprint(),
    )
    step = report['source']['step']
    return EvalParams(harness, params, shardings, step, 'compressed', report['method'])
  step = harness.checkpointer.latest_step()
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {harness.checkpointer.directory}: train first.')
  abstract, shardings = harness.abstract_state()
  # The tokenizer first, from the checkpoint's meta alone: another tokenizer sizes another
  # model, which the restore would otherwise reject with a shape error.
  meta = harness.checkpointer.read_meta(step)
  harness_lib.check_tokenizer(meta, harness.exp, harness.checkpointer.directory)
  if api.is_task(harness.exp.objective) and os.path.isdir(os.path.join(workdir, 'best')):
    best = best_checkpoint.BestCheckpoint(workdir)
    best_step = best.step()
    params = None if best_step is None else best.restore_params(abstract.params)
    best.close()
    if params is not None:
      harness.checkpointer.close()
      return EvalParams(harness, params, shardings.params, best_step, 'best')
  state, _, _ = harness.checkpointer.restore(step, abstract)  # Verified against its digests.
  harness.checkpointer.close()
  return EvalParams(harness, state.params, shardings.params, step, 'latest')


def evaluate_checkpoint(config, workdir: str) -> dict:
  """Evaluates a run and writes `<workdir>/eval.json`; returns the figures.

  Pretraining objectives: the newest checkpoint on the held-out split. Task objectives:
  the best checkpoint (`<workdir>/best`, kept during fine-tuning), or the newest when
  the run kept none, on every eval split; eval.json then carries what the results
  table gathers (benchmark, task, seed, scores, the config's published reference). A
  compressed run: its model's params (`load_eval_params`). Where the config leaves the
  checkpoint or a data location empty, the run's own (its config.json) is used, so
  `eval.py --config configs/glue.py:sst2 --workdir DIR` needs no more flags than
  training had.
  """
  loaded = load_eval_params(config, workdir)
  harness, config = loaded.harness, loaded.harness.config
  compression = {'compression': loaded.compression} if loaded.compression else {}
  if api.is_task(harness.exp.objective):
    predict = harness.predict_step(loaded.shardings)
    values = loop.evaluate_task(harness, loaded.params, predict)
    result = dict(_task_result(config, loaded.step, loaded.checkpoint, values), **compression)
    rows = {**result['metrics'], **{f'score/{k}': v for k, v in result['scores'].items()}}
    rows = {'step': loaded.step, 'checkpoint': loaded.checkpoint, **rows}
  else:
    values = loop.evaluate(harness, loaded.params, harness.eval_step(loaded.shardings))
    result = {'step': loaded.step, 'objective': config.objective.module, **compression}
    result = rows = dict(result, **values)
  if jax.process_index() == 0:
    print(f'{"metric":<16} {"value":>12}')
    for name, value in rows.items():
      text = f'{value:>12.4f}' if isinstance(value, float) else f'{value!s:>12}'
      print(f'{name:<16} {text}')
    atomic_files.write_json(os.path.join(workdir, 'eval.json'), result, indent=2)
  return result


def trained_and_evaluated(config, workdir: str) -> dict:
  """The eval.json of a train.py run of `config` in `workdir`: trained (or resumed from its
  checkpoint) and evaluated unless its eval.json is already there, then read back. The
  stages of tools/lifelong.py and tools/self_paced.py: the same call goes on after a kill,
  and a run a signal stopped raises during_training.RunStopped, unevaluated."""
  done = os.path.join(workdir, 'eval.json')
  if not os.path.exists(done):
    during_training.train_to_completion(config, workdir)
    evaluate_checkpoint(config, workdir)
  with open(done) as f:
    return json.load(f)


# Where a run's model and data come from: taken from its config.json when left empty.
_RUN_LOCATIONS = ('init_from', 'teacher', 'data.tokenizer_path', 'data.glue_dir', 'data.conll_dir',
                  'data.squad_file', 'data.eval_squad_file', 'data.clue_dir',
                  'quant.bits')  # fmt: skip
# (quant.bits too: a quantization-aware run is evaluated with the fake quantization it was
# trained with, models/quantization.py, not as a float model.)


def evaluate_init_from(config, workdir: str) -> dict:
  """The figures of the model a run of `config` starts from, before any training step
  (`config.init_from`'s leaves loaded, the rest freshly initialized at `config.seed`; with
  no init_from, all of it), evaluated as evaluate_checkpoint evaluates a run: a task
  objective's loop.evaluate_task result, a pretraining (or episodic) objective's averaged
  metrics, and 'fresh' (the leaves not loaded; ['*'] without init_from). `workdir`
  receives the tokenizer copy the harness makes; nothing is trained.
  """
  harness = Harness(config, workdir)
  state, shardings = state_lib.create(
    harness.model, harness.tx, mesh=harness.mesh, rules=harness.rules, seed=config.seed,
    seq_len=config.seq_len,
  )  # fmt: skip
  params, report = state.params, {'fresh': ['*']}
  if config.init_from:
    loaded = pretrained.load_params(model_setup.describe(config.init_from))
    params, report = pretrained.merge(state.params, loaded, shardings.params)
  if api.is_task(harness.exp.objective):
    values = loop.evaluate_task(harness, params, harness.predict_step(shardings.params))
  else:
    values = loop.evaluate(harness, params, harness.eval_step(shardings.params))
  return dict(values, fresh=report['fresh'])


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


def _task_result(config, step: int, checkpoint: str, values: dict) -> dict:
  """eval.json of a task: what the results table gathers (evaluation/results_table.py)."""
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
