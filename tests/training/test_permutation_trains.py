"""XLNet's permutation LM trains a tiny XLNet through the real training loop (CPU)."""

import json
import os

import numpy as np
import pytest

from configs.cpu import xlnet as xlnet_config
from evaluation import during_training


@pytest.mark.slow
def test_permutation_lm_trains_at_tiny_width(tmp_path, spm_path):
  config = xlnet_config.get_config()
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 2
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    losses = [json.loads(line)['loss'] for line in f]
  assert len(losses) == 30 and np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
