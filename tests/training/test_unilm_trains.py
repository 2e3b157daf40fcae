"""UniLM's mixed attention masks train a tiny BERT through the real training loop (CPU)."""

import json
import os

import numpy as np
import pytest

from configs.cpu import unilm
from evaluation import during_training


@pytest.mark.slow
def test_unilm_trains_at_tiny_width(tmp_path, spm_path):
  config = unilm.get_config()
  config.model.preset = 'bert-base'
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 2
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  losses = [r['loss'] for r in records]
  assert len(losses) == 30 and np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
  # Every kind was trained and logged (a step without the kind logs 0).
  for kind in ('bidirectional', 'left_to_right', 'right_to_left', 'seq2seq'):
    kind_losses = np.array([r[f'loss_{kind}'] for r in records])
    assert np.isfinite(kind_losses).all() and (kind_losses > 1).sum() >= 10, kind
