"""MT-DNN (objectives/mtdnn.py, configs/mtdnn.py): tasks mixed in proportion to their
size, each row's own head in the loss, each task scored on its own dev split, and a
short multi-task run on GLUE-layout fixtures (RTE: classification, STS-B: regression)."""

import functools
import os
import random

import jax
import numpy as np
import pytest

from configs import mtdnn as mtdnn_config
from data import tasks
from evaluation import loop
from tests.training import finetune_runs
from tests.training.test_finetune import tiny
from training import experiment
from training import harness as harness_lib
from training import state as state_lib

_GOOD = ('great', 'wonderful', 'excellent', 'lovely', 'superb')
_BAD = ('awful', 'terrible', 'horrible', 'dreadful', 'poor')
_FILLER = ('the', 'film', 'was', 'a', 'story', 'of', 'people', 'and', 'it', 'this', 'plot')


def _sentence(rng: random.Random, positive: bool | None) -> str:
  """Filler words and two sentiment keywords (a signal a 2-layer model finds within 40
  steps), or none when `positive` is None."""
  words = rng.choices(_FILLER, k=rng.randint(2, 6))
  for _ in range(0 if positive is None else 2):
    words.insert(rng.randint(0, len(words)), rng.choice(_GOOD if positive else _BAD))
  return ' '.join(words)


def write_rte(glue_dir, n_train: int, n_dev: int, seed: int = 0) -> None:
  """RTE's layout; 'entailment' (label 0) when the first sentence is positive."""
  rng = random.Random(seed)
  os.makedirs(os.path.join(glue_dir, 'RTE'), exist_ok=True)
  for split, n in (('train', n_train), ('dev', n_dev)):
    with open(os.path.join(glue_dir, 'RTE', f'{split}.tsv'), 'w') as f:
      f.write('index\tsentence1\tsentence2\tlabel\n')
      for i in range(n):
        label = ('entailment', 'not_entailment')[i % 2]
        f.write(f'{i}\t{_sentence(rng, i % 2 == 0)}\t{_sentence(rng, None)}\t{label}\n')


def write_stsb(glue_dir, n_train: int, n_dev: int, seed: int = 1) -> None:
  """STS-B's layout; score 1.0 (+-0.25) when the first sentence is positive, else 0 to
  0.25: small scores, since a 40-step run cannot move the output far from 0 (Adam moves
  a weight about lr per step) and a large error would swamp RTE's gradient."""
  rng = random.Random(seed)
  os.makedirs(os.path.join(glue_dir, 'STS-B'), exist_ok=True)
  header = 'index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore'
  for split, n in (('train', n_train), ('dev', n_dev)):
    with open(os.path.join(glue_dir, 'STS-B', f'{split}.tsv'), 'w') as f:
      f.write(header + '\n')
      for i in range(n):
        positive = i % 2 == 0
        score = 1.0 + rng.uniform(-0.25, 0.25) if positive else rng.uniform(0.0, 0.25)
        a, b = _sentence(rng, positive), _sentence(rng, None)
        f.write(f'{i}\tmain-news\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{score:.3f}\n')


def _run(spm_path, glue_dir, workdir, tasks_arg: str = 'rte,stsb'):
  config = tiny(mtdnn_config.get_config(tasks_arg), spm_path, glue_dir)
  return config, harness_lib.Harness(config, str(workdir))


def test_config_and_eval_splits():
  config = mtdnn_config.get_config('mrpc,rte,stsb')
  assert config.objective.tasks == config.data.task == 'mrpc,rte,stsb'
  assert config.num_epochs == 5 and config.optimizer.learning_rate == 5e-5
  experiment.size_epochs(config, 3668 + 2490 + 5749)  # The three train.tsv files' records.
  assert config.total_steps == -(-5 * (3668 + 2490 + 5749) // 32) == 1861
  assert config.eval_every_steps == round(-(-(3668 + 2490 + 5749) // 32) / 2) == 186
  assert tasks.eval_splits(config.data) == ['mrpc:dev', 'rte:dev', 'stsb:dev']
  config.data.task = 'mnli,rte'
  assert tasks.eval_splits(config.data) == ['mnli:dev_matched', 'mnli:dev_mismatched', 'rte:dev']
  config.data.eval_split = 'dev,mnli:dev_mismatched'
  assert tasks.eval_splits(config.data) == ['mnli:dev', 'rte:dev', 'mnli:dev_mismatched']
  with pytest.raises(ValueError, match='tasks must be among'):
    mtdnn_config.get_config('rte,squad')


def test_train_rows_mix_the_tasks_in_proportion_to_their_size(spm_path, tmp_path):
  """60 RTE + 20 STS-B examples, batches of 8: each epoch (10 batches) holds every example
  once, its first half about 3/4 RTE (a concatenated order would give 40 of 40), and the
  order changes between epochs."""
  write_rte(tmp_path, 60, 4)
  write_stsb(tmp_path, 20, 4)
  config, run = _run(spm_path, tmp_path, tmp_path / 'run')
  records = run.exp.documents('train')
  assert [r['task'] for r in records] == [0] * 60 + [1] * 20
  loader = run.exp.loader('train', run.shards)
  orders = []
  for _ in range(3):
    batches = [next(loader) for _ in range(10)]
    ids = np.concatenate([b['example_id'] for b in batches])
    task = np.concatenate([b['task'] for b in batches])
    assert sorted(ids.tolist()) == list(range(80))
    np.testing.assert_array_equal(task, [records[i]['task'] for i in ids])
    assert np.sum(task == 0) == 60 and np.sum(task == 1) == 20
    # First 40 rows: hypergeometric mean 30, sd sqrt(40 * 3/4 * 1/4 * 40/79) ~ 1.95.
    assert abs(np.sum(task[:40] == 0) - 30) < 5 * 1.95
    orders.append(ids.tolist())
  assert orders[0] != orders[1] != orders[2]


def test_loss_by_hand_picks_each_rows_head_under_jit(spm_path, tmp_path):
  """A classification row (RTE), a regression row (STS-B) and a padding row in one batch:
  the loss is the mean of the RTE cross-entropy and the STS-B squared error."""
  write_rte(tmp_path, 4, 4)
  write_stsb(tmp_path, 4, 4)
  config, run = _run(spm_path, tmp_path, tmp_path / 'run')
  state, _ = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  assert set(state.params) == {'encoder', 'pooler', 'classifier_rte', 'classifier_stsb'}
  assert state.params['classifier_stsb']['kernel'].shape == (64, 1)
  tokenizer = run.exp.tokenizer
  rng = random.Random(3)
  rows = [tasks.encode_pair(tokenizer, _sentence(rng, True), _sentence(rng, False), 32)]
  rows = [*rows, *(tasks.encode_pair(tokenizer, _sentence(rng, True), None, 32) for _ in '12')]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  batch['segment_ids'][2] = 0  # Padding, as the loader appends to the last eval batch.
  batch.update(
    label=np.array([1.0, 3.2, 0.0], np.float32),
    task=np.array([0, 1, 0], np.int32),
    example_id=np.array([0, 1, -1]),
  )
  batch = run.exp.objective.make_preprocess(config.objective, tokenizer, 0)(batch)
  loss_fn = functools.partial(run.exp.objective.loss_fn, rng=None, model=run.model)
  # One jitted call: the loss, its metrics and the gradients.
  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.params, batch)
  inputs = [batch[k] for k in ('inputs', 'segment_ids', 'positions', 'token_types')]
  logits = jax.jit(run.model.apply)({'params': state.params}, *inputs)
  rte, stsb = np.asarray(logits['rte']), np.asarray(logits['stsb'])
  assert rte.shape == (3, 2) and stsb.shape == (3, 1)
  xent = np.log(np.sum(np.exp(rte[0]))) - rte[0, 1]
  squared = (stsb[1, 0] - 3.2) ** 2
  np.testing.assert_allclose(float(loss), (xent + squared) / 2, rtol=1e-5)
  np.testing.assert_allclose([float(v) for v in metrics['rte_loss']], [xent, 1.0], rtol=1e-5)
  np.testing.assert_allclose([float(v) for v in metrics['stsb_loss']], [squared, 1.0], rtol=1e-5)
  assert [float(v) for v in metrics['loss']][1] == 2.0
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  assert np.abs(np.asarray(grads['classifier_stsb']['kernel'])).sum() > 0


def test_each_task_is_scored_on_its_own_dev_split(spm_path, tmp_path):
  write_rte(tmp_path, 8, 13)
  write_stsb(tmp_path, 8, 7)
  config, run = _run(spm_path, tmp_path, tmp_path / 'run')
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  predict_step = run.predict_step(shardings.params)
  outputs = loop.predict_split(run, state.params, predict_step, 'stsb:dev')
  records = run.exp.documents('eval', 'stsb:dev')
  assert len(records) == 7 and all(r['task'] == 1 for r in records)
  np.testing.assert_allclose(outputs['label'], [records[i]['label'] for i in outputs['example_id']])
  assert not np.all(np.mod(outputs['prediction'], 1) == 0)  # STS-B's head: real scores.
  result = loop.evaluate_task(run, state.params, predict_step)
  assert result['examples'] == {'rte:dev': 13, 'stsb:dev': 7}
  assert list(result['scores']) == ['rte', 'stsb']  # RTE's score picks the best checkpoint.
  assert set(result['metrics']) == {'rte_accuracy', 'stsb_pearson', 'stsb_spearman', 'stsb_corr'}


@pytest.mark.slow
def test_short_multitask_run_improves_both_tasks(spm_path, tmp_path):
  """60 steps (batch 8) on 160 RTE + 160 STS-B fixture examples: RTE's dev accuracy and
  STS-B's dev Spearman both climb; eval.json reports one column per task."""
  glue_dir = tmp_path / 'glue'
  write_rte(glue_dir, 160, 48)
  write_stsb(glue_dir, 160, 48)
  workdir = str(tmp_path / 'run')
  config, run = _run(spm_path, glue_dir, workdir)
  # Measured on this fixture: RTE's head leaves the constant prediction (accuracy 0.5)
  # around step 35-40 at a constant 3e-3 (STS-B's by step 20), so the run takes 60 steps;
  # steps are cheap next to compilation, and one evaluation at the end suffices.
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 60, 60, 60
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 4
  config.optimizer.warmup_ratio = 0.0
  config.optimizer.schedule = 'constant'
  config.model.dropout_rate, config.log_every_steps = 0.0, 10
  before, result = finetune_runs.train_and_evaluate(config, workdir)
  after = result['scores']
  assert after['rte'] >= 0.8 > before['scores']['rte'] + 0.2, (before, result)
  assert after['stsb'] >= 0.6 and after['stsb'] > before['scores']['stsb'] + 0.3, (before, result)
  assert result['examples'] == {'rte:dev': 48, 'stsb:dev': 48} and result['task'] == 'rte,stsb'
