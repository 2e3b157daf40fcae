"""Fine-tuning through train.py's loop: task rows, exact eval counts, best checkpoint,
init_from, eval.json and the results table, on GLUE-layout fixtures the tests write."""

import functools
import json
import os
import random

import jax
import numpy as np
import pytest

from configs import glue as glue_config
from configs import quickstart
from data import tasks
from data.tokenizers import load_tokenizer
from evaluation import checkpoint_eval, during_training, loop, results_table
from tests.training import finetune_runs
from tests.training.finetune_runs import sentence, tiny, write_mnli, write_sst2  # noqa: F401
from training import best_checkpoint, model_setup, pretrained
from training import harness as harness_lib
from training import state as state_lib


def test_encode_pair_frames_and_truncates_longest_first(spm_path):
  tokenizer = load_tokenizer(spm_path)
  a, b = 'the quick brown fox jumps over the lazy dog again and again', 'a dog'
  row = tasks.encode_pair(tokenizer, a, b, 12)
  ids_a, ids_b = tokenizer.encode(a).tolist(), tokenizer.encode(b).tolist()
  kept_a, kept_b = tasks.truncate_pair(ids_a, ids_b, 12 - 3)
  assert kept_b == ids_b and kept_a == ids_a[: 9 - len(ids_b)]  # Only the longer one shrinks.
  expected = [tokenizer.cls_id, *kept_a, tokenizer.sep_id, *kept_b, tokenizer.sep_id]
  assert row['tokens'].tolist() == expected
  assert row['token_types'].tolist() == [0] * (len(kept_a) + 2) + [1] * (len(kept_b) + 1)
  short = tasks.encode_pair(tokenizer, 'a dog', None, 12)
  n = len(ids_b) + 2
  assert short['segment_ids'].tolist() == [1] * n + [0] * (12 - n)
  assert short['positions'][:n].tolist() == list(range(n)) and not short['token_types'].any()


def test_classification_loss_by_hand_and_padding_rows_weigh_nothing(spm_path, tmp_path):
  write_sst2(tmp_path, 8, 8)
  for task, num_labels in (('sst2', 2), ('stsb', 1)):
    config = tiny(glue_config.get_config(task), spm_path, tmp_path)
    run = harness_lib.Harness(config, str(tmp_path / task))
    state, _ = state_lib.create(
      run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
    )
    tokenizer = run.exp.tokenizer
    rows = [
      tasks.encode_pair(tokenizer, sentence(random.Random(i), True), None, 32) for i in range(3)
    ]
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    batch['segment_ids'][2] = 0  # A padding row, as the loader appends to the last eval batch.
    batch.update(label=np.array([1.0, 0.0, 1.0], np.float32), example_id=np.array([0, 1, -1]))
    batch = run.exp.objective.make_preprocess(config.objective, tokenizer, 0)(batch)
    loss_fn = functools.partial(run.exp.objective.loss_fn, rng=None, model=run.model)
    loss, metrics = jax.jit(loss_fn)(state.params, batch)
    logits = np.asarray(
      run.model.apply({'params': state.params}, batch['inputs'], batch['segment_ids'],
                      batch['positions'], batch['token_types'])
    )  # fmt: skip
    assert logits.shape == (3, num_labels)
    if num_labels == 1:
      expected = np.mean((logits[:2, 0] - [1.0, 0.0]) ** 2)
    else:
      log_p = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
      expected = -np.mean([log_p[0, 1], log_p[1, 0]])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(metrics['loss'][1]) == 2.0  # Two real rows.


def test_eval_sees_every_example_once_across_shards_and_padding(spm_path, tmp_path):
  write_sst2(tmp_path, 16, 37)  # 37 dev examples: 2 shards x 4 rows leave a padded batch.
  config = tiny(glue_config.get_config('sst2'), spm_path, tmp_path)
  config.data.num_shards = 2
  run = harness_lib.Harness(config, str(tmp_path / 'run'))
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  outputs = loop.predict_split(
    run, state.params, run.predict_step(shardings.params), eval_split='dev'
  )
  assert sorted(outputs['example_id'].tolist()) == list(range(37))
  labels = [r['label'] for r in run.exp.documents('eval')]
  np.testing.assert_array_equal(outputs['label'], np.asarray(labels)[outputs['example_id']])
  result = loop.evaluate_task(run, state.params, run.predict_step(shardings.params))
  assert result['examples'] == {'dev': 37} and set(result['scores']) == {'sst2'}


def test_mnli_scores_both_dev_splits_with_their_suffixes(spm_path, tmp_path):
  write_mnli(tmp_path, 10)
  config = tiny(glue_config.get_config('mnli'), spm_path, tmp_path)
  run = harness_lib.Harness(config, str(tmp_path / 'run'))
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  result = loop.evaluate_task(run, state.params, run.predict_step(shardings.params))
  assert set(result['scores']) == {'mnli_m', 'mnli_mm'}
  assert result['examples'] == {'dev_matched': 10, 'dev_mismatched': 11}


def test_best_checkpoint_keeps_only_improvements_and_survives_reopening(tmp_path):
  params = {'w': np.zeros(3, np.float32)}
  best = best_checkpoint.BestCheckpoint(str(tmp_path))
  values = lambda s: {'scores': {'sst2': s}, 'metrics': {'accuracy': s}}  # noqa: E731
  assert best.update(10, params, 'sst2', values(0.6))
  assert not best.update(20, {'w': np.ones(3, np.float32)}, 'sst2', values(0.5))
  assert best.update(30, {'w': np.full(3, 2.0, np.float32)}, 'sst2', values(0.7))
  best.close()
  reopened = best_checkpoint.BestCheckpoint(str(tmp_path))
  assert reopened.meta()['step'] == 30 and reopened.meta()['score'] == 0.7
  abstract = {'w': jax.ShapeDtypeStruct((3,), np.float32)}
  np.testing.assert_array_equal(np.asarray(reopened.restore_params(abstract)['w']), 2.0)
  assert not reopened.update(30, params, 'sst2', values(0.9))  # A resumed run's repeated step.
  reopened.close()


@pytest.mark.slow
def test_short_fine_tune_improves_dev_accuracy_and_feeds_the_table(spm_path, tmp_path):
  """60 steps (batch 8) on a keyword-sentiment fixture: dev accuracy climbs from chance;
  eval.json reports the best checkpoint and the results table reads it."""
  glue_dir = tmp_path / 'glue'
  write_sst2(glue_dir, 320, 64)
  workdir = str(tmp_path / 'run')
  config = tiny(glue_config.get_config('sst2'), spm_path, glue_dir)
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 60, 30, 30
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 4
  config.optimizer.warmup_ratio = 0.0
  config.model.dropout_rate = 0.0
  config.log_every_steps = 10
  before, result = finetune_runs.train_and_evaluate(config, workdir)
  assert result['checkpoint'] == 'best' and result['step'] in (30, 60)
  assert result['scores']['sst2'] >= 0.85 > before['scores']['sst2'] + 0.2, (before, result)
  with open(os.path.join(workdir, 'eval.json')) as f:
    saved = json.load(f)
  assert saved['benchmark'] == 'glue' and saved['task'] == 'sst2' and saved['seed'] == 0
  assert saved['examples'] == {'dev': 64}
  table = results_table.build_table(results_table.gather(str(tmp_path / 'run*')), 'glue')
  column = table['columns'][0]
  assert column['name'] == 'sst2' and column['n'] == 1
  assert column['median'] == pytest.approx(100 * saved['scores']['sst2'])
  assert column['reference'] == 93.5


@pytest.mark.slow
def test_init_from_a_pretraining_run_loads_its_encoder(spm_path, tmp_path):
  """A 3-step MLM run, then fine-tuning from it: the encoder starts at the pretrained
  values, the pooler and classifier fresh; the tokenizer comes from the run."""
  pretrain_dir = str(tmp_path / 'mlm')
  mlm = quickstart.get_config()
  mlm.data.tokenizer_path = spm_path
  mlm.model.num_layers, mlm.model.d_model, mlm.model.num_heads, mlm.model.mlp_dim = 2, 64, 2, 128
  mlm.seq_len, mlm.batch_size, mlm.total_steps, mlm.eval_every_steps = 32, 8, 3, 0
  mlm.peak_flops_per_device, mlm.optimizer.warmup_steps = 1e9, 1
  mlm.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(mlm, pretrain_dir)

  write_sst2(tmp_path / 'glue', 16, 8)
  config = glue_config.get_config('sst2')
  config.data.glue_dir, config.init_from = str(tmp_path / 'glue'), pretrain_dir
  config.seq_len, config.batch_size, config.peak_flops_per_device = 32, 8, 1e9
  described = model_setup.describe(pretrain_dir)
  assert described.kind == 'run' and described.config.d_model == 64
  run = harness_lib.Harness(config, str(tmp_path / 'ft'))
  assert run.exp.model_cfg.num_layers == 2 and run.exp.model_cfg.dropout_rate == 0.1
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  loaded = pretrained.load_params(described)
  params, report = pretrained.merge(state.params, loaded, shardings.params)
  assert any(n.startswith('encoder/') for n in report['loaded'])
  assert all(n.startswith(('pooler/', 'classifier/')) for n in report['fresh'])
  assert any(n.startswith('mlm_') for n in report['unused'])
  flat = jax.tree_util.tree_leaves_with_path(params['encoder'])
  source = loaded['encoder']
  for path, leaf in flat:
    value = source
    for key in path:
      value = value[key.key]
    np.testing.assert_array_equal(np.asarray(leaf), value)
  config.total_steps, config.eval_every_steps, config.optimizer.warmup_steps = 2, 2, 1
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(
    config, str(tmp_path / 'ft')
  )  # The whole path: init_from, then train.
  assert best_checkpoint.BestCheckpoint(str(tmp_path / 'ft')).step() == 2
  # eval.py's command with nothing but the task: the checkpoint and data come from the run.
  bare = glue_config.get_config('sst2')
  bare.seq_len, bare.batch_size = 32, 8
  result = checkpoint_eval.evaluate_checkpoint(bare, str(tmp_path / 'ft'))
  assert bare.init_from == pretrain_dir and bare.data.glue_dir == str(tmp_path / 'glue')
  assert result['checkpoint'] == 'best' and result['examples'] == {'dev': 8}
