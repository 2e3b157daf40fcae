"""The README's main job, shortened, through its own commands: train.py trains, checkpoints,
logs and evaluates end to end, eval.py scores the newest checkpoint."""

import json
import os
import re

import pytest

from tests.training import runs


@pytest.mark.slow
def test_quickstart_trains_checkpoints_and_evaluates(tmp_path):
  workdir = str(tmp_path / 'quickstart')
  # The real config (embedded corpus, SentencePiece trained on the fly), 40 of its 500 steps.
  overrides = (
    '--config.total_steps=40',
    '--config.log_every_steps=10',
    '--config.eval_every_steps=20',
    '--config.checkpoint_every_steps=20',
  )
  trained = runs.run('train.py', workdir, *overrides, optimized=True)
  assert 'step 40/40' in trained.stdout and 'eval at step 40' in trained.stdout
  assert not re.search(r'^I\d{4} ', trained.stderr, re.M)  # Library INFO: in logs/ only.

  assert os.path.exists(os.path.join(workdir, 'tokenizer', 'spm.model'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['20', '40']
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train_logs = [r for r in records if 'loss' in r]
  assert [r['step'] for r in train_logs] == [10, 20, 30, 40]
  for key in ('loss', 'learning_rate', 'tokens_per_sec', 'mfu', 'accuracy', 'grad_norm'):
    assert all(key in r for r in train_logs), key
  assert train_logs[-1]['loss'] < train_logs[0]['loss'] - 0.5  # Clearly learning.
  # The 12% warm-up scales with the shortened run: 5 steps up, then a linear decay over 35;
  # the line of step 10 logs step 9's rate, 4 steps into the decay.
  assert train_logs[0]['learning_rate'] == pytest.approx(1e-3 * (1 - 4 / 35))
  assert [r['step'] for r in records if 'eval/loss' in r] == [20, 40]

  evaluated = runs.run('eval.py', workdir, optimized=True)
  with open(os.path.join(workdir, 'eval.json')) as f:
    saved = json.load(f)
  assert saved['step'] == 40 and saved['objective'] == 'objectives.mlm'
  assert 0 < saved['loss'] < 8.3 and saved['rows'] > 0 and saved['perplexity'] > 1
  assert f'{saved["loss"]:.4f}' in evaluated.stdout  # The table printed.
  final = [r for r in records if 'eval/loss' in r][-1]
  assert saved['loss'] == pytest.approx(final['eval/loss'], rel=1e-5)  # Same checkpoint.
