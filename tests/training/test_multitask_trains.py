"""BERT's MLM + NSP and ALBERT's MLM + SOP train through the real loop on sentence pairs."""

import json
import os

import numpy as np
import pytest

from evaluation import during_training


@pytest.mark.slow
@pytest.mark.parametrize('name', ['bert_nsp', 'albert_sop'])
def test_combined_objective_trains_and_logs_each_part(tmp_path, spm_path, name):
  config = __import__(f'configs.cpu.{name}', fromlist=['get_config']).get_config()
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 30
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 3
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if 'total_loss' in r]
  assert len(train) == 30
  total = np.array([r['total_loss'] for r in train])
  assert np.all(np.isfinite(total)) and np.mean(total[-5:]) < np.mean(total[:5]) - 0.3, total
  # Each part is logged on its own; the total is their weighted sum (weights 1).
  for r in train:
    np.testing.assert_allclose(r['total_loss'], r['loss'] + r['sentence_order/loss'], rtol=1e-4)
    assert 0.0 <= r['sentence_order/accuracy'] <= 1.0
  evaluation = [r for r in records if 'eval/sentence_order/accuracy' in r]
  assert len(evaluation) == 1 and np.isfinite(evaluation[0]['eval/loss'])
