"""The README's main job, shortened: trains, checkpoints, logs and evaluates end to end."""

import json
import os

import pytest

from configs import quickstart
from evaluation import checkpoint_eval, during_training


@pytest.mark.slow
def test_quickstart_trains_checkpoints_and_evaluates(tmp_path):
  config = quickstart.get_config()  # The real config: embedded corpus, SentencePiece on the fly.
  config.total_steps = 40
  config.log_every_steps = 10
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 20
  config.optimizer.warmup_steps = 10
  config.optimizer.warmup_ratio = 0.0
  workdir = str(tmp_path)
  during_training.train_and_evaluate(config, workdir)

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
  assert any('eval/loss' in r for r in records)

  result = checkpoint_eval.evaluate_checkpoint(config, workdir)
  assert result['step'] == 40
  with open(os.path.join(workdir, 'eval.json')) as f:
    saved = json.load(f)
  assert saved == pytest.approx(result)
  assert 0 < saved['loss'] < 8.3 and saved['rows'] > 0 and saved['perplexity'] > 1
