"""Task-adaptive pretraining (configs/dapt.py, tools/task_text.py): the task's text as a
corpus, then the whole chain MLM pretraining -> TAPT -> fine-tuning through train()."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import dapt, quickstart
from configs import glue as glue_config
from data import sources, tasks
from evaluation import during_training
from models.convert import converted
from tests.training.test_finetune import write_sst2
from tools import task_text
from training import harness as harness_lib
from training import model_setup, optimizers, pretrained
from training import state as state_lib


def test_task_text_writes_one_document_per_example(tmp_path):
  write_sst2(tmp_path, 12, 4)
  config = glue_config.get_config('sst2')
  config.data.glue_dir = str(tmp_path)
  out = str(tmp_path / 'sst2.txt')
  assert task_text.write_task_text(config.data, out) == 12
  records = tasks.load_examples(config.data, 'train')
  assert sources.read_text_documents([out]) == [r['text_a'] for r in records]
  # Pairs: text_b is a line of its own inside the example's document.
  pairs = task_text.format_documents([['a b', 'c d'], ['e']])
  path = tmp_path / 'pairs.txt'
  path.write_text(pairs, encoding='utf-8')
  assert sources.read_text_documents([str(path)]) == ['a b\nc d', 'e']


def test_squad_contexts_are_written_once(tmp_path):
  context = 'a cat sat\non the mat'
  qas = [{'id': str(i), 'question': 'q?', 'answers': [{'text': 'cat', 'answer_start': 2}]}
         for i in range(3)]  # fmt: skip
  data = {'data': [{'paragraphs': [{'context': context, 'qas': qas},
                                   {'context': 'a cat', 'qas': qas[:1]}]}]}  # fmt: skip
  (tmp_path / 'train.json').write_text(json.dumps(data), encoding='utf-8')
  config = dapt.base.get_config()
  config.data.source, config.data.squad_file = 'squad', str(tmp_path / 'train.json')
  # The newline inside the context does not split it into two sentences.
  assert task_text.task_documents(config.data) == [['a cat sat on the mat'], ['a cat']]


def test_dapt_recipe_scales_the_papers_epochs():
  config = dapt.get_config('sst2')
  assert config.objective.module == 'objectives.mlm' and config.data.source == 'text'
  assert config.batch_size == 256 and config.optimizer.learning_rate == 1e-4
  # 100 epochs of 67,349 examples x 11 tokens packed into 126-token rows, 256 rows a step.
  assert config.total_steps == 2297
  assert optimizers.warmup_steps(config.optimizer, config.total_steps) == round(0.06 * 2297)
  with pytest.raises(ValueError, match='must be one of'):
    dapt.get_config('imdb')


def _tiny_mlm(spm_path: str):
  c = quickstart.get_config()
  c.data.tokenizer_path = spm_path
  c.model.num_layers, c.model.d_model, c.model.num_heads, c.model.mlp_dim = 2, 64, 2, 128
  c.seq_len, c.batch_size, c.total_steps, c.eval_every_steps = 32, 8, 3, 0
  c.peak_flops_per_device, c.optimizer.warmup_steps = 1e9, 1
  c.optimizer.warmup_ratio = 0.0
  return c


@pytest.mark.slow
def test_pretrain_then_tapt_then_fine_tune(spm_path, tmp_path):
  """3 MLM steps; 5 TAPT steps on the SST-2 fixture's text starting from that run's
  params, MLM head included (the first step's logged loss is the loss of the pretrained
  params on the first batch); 2 fine-tuning steps from the TAPT run."""
  pretrain_dir, tapt_dir, ft_dir = (str(tmp_path / n) for n in ('mlm', 'tapt', 'ft'))
  during_training.train_and_evaluate(_tiny_mlm(spm_path), pretrain_dir)

  glue_dir = tmp_path / 'glue'
  write_sst2(glue_dir, 48, 8)
  task = glue_config.get_config('sst2')
  task.data.glue_dir = str(glue_dir)
  text = str(tmp_path / 'sst2.txt')
  assert task_text.write_task_text(task.data, text) == 48

  config = dapt.get_config('sst2')
  config.init_from, config.data.text_files = pretrain_dir, text
  config.seq_len, config.batch_size, config.total_steps = 32, 8, 5
  config.eval_every_steps, config.log_every_steps, config.optimizer.warmup_steps = 0, 1, 1
  config.optimizer.warmup_ratio = 0.0
  config.peak_flops_per_device = 1e9
  config.model.dropout_rate = 0.0  # The logged first-step loss is then deterministic.

  # What train() will start from: every tensor of the run, the MLM head too.
  run = harness_lib.Harness(config, tapt_dir)
  assert run.exp.model_cfg.num_layers == 2 and run.exp.model_cfg.d_model == 64
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  loaded = pretrained.load_params(model_setup.describe(pretrain_dir))
  params, report = pretrained.merge(state.params, loaded, shardings.params)
  assert report['fresh'] == [] and report['unused'] == []
  assert any(name.startswith('mlm_') for name in report['loaded'])
  first_batch = next(iter(run.exp.loader('train', run.shards)))
  model, objective = run.model, run.exp.objective
  loss_of = jax.jit(lambda p, b: objective.loss_fn(p, b, None, model=model))
  expected, _ = loss_of(params, first_batch)
  run.checkpointer.close()

  during_training.train_and_evaluate(config, tapt_dir)
  with open(os.path.join(tapt_dir, 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f]
  losses = [r['loss'] for r in logged if 'loss' in r]
  assert len(losses) == 5
  np.testing.assert_allclose(losses[0], float(expected), rtol=1e-4)
  tapt = pretrained.load_params(model_setup.describe(tapt_dir))
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), tapt, loaded)
  assert max(jax.tree.leaves(moved)) > 0  # TAPT trained the params it loaded.

  # A converted encoder without an MLM head (sentence-transformers' MiniLM): the head
  # starts fresh and the encoder loads.
  converted_dir = str(tmp_path / 'converted')
  described = model_setup.describe(pretrain_dir)
  encoder_only = {'encoder': loaded['encoder']}
  os.makedirs(converted_dir)
  shutil.copyfile(described.tokenizer_path, os.path.join(converted_dir, 'spm.model'))
  converted.save(
    converted_dir,
    converted.Converted('bert', described.config, encoder_only, [], tokenizer_files=['spm.model']),
  )
  from_converted = model_setup.describe(converted_dir)
  assert from_converted.kind == 'converted' and from_converted.config == described.config
  # The same model as the TAPT run's: its fresh state is reused, loss_of is not recompiled.
  params, report = pretrained.merge(
    state.params, pretrained.load_params(from_converted), shardings.params
  )
  assert report['fresh'] and all(name.startswith('mlm_') for name in report['fresh'])
  assert all(name.startswith('encoder/') for name in report['loaded']) and not report['unused']
  fresh_head_loss, _ = loss_of(params, first_batch)
  assert np.isfinite(float(fresh_head_loss)) and float(fresh_head_loss) != float(expected)

  task.init_from = tapt_dir
  task.seq_len, task.batch_size, task.peak_flops_per_device = 32, 8, 1e9
  # No evaluation (its compile would double the cost): the step count and the log suffice.
  task.total_steps, task.eval_every_steps, task.optimizer.warmup_steps = 2, 0, 1
  task.optimizer.warmup_ratio = 0.0
  task.log_every_steps = 1
  during_training.train_and_evaluate(task, ft_dir)
  with open(os.path.join(ft_dir, 'metrics.jsonl')) as f:
    assert [r['step'] for r in map(json.loads, f) if 'loss' in r] == [1, 2]
  with open(os.path.join(ft_dir, 'config.json')) as f:
    assert json.load(f)['init_from'] == tapt_dir
