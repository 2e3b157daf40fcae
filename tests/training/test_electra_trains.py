"""ELECTRA (generator + discriminator) trains through the real training loop (CPU)."""

import json
import os

import numpy as np
import pytest

from configs.cpu import electra as electra_small
from evaluation import during_training


@pytest.mark.slow
def test_electra_trains_at_tiny_width(tmp_path, spm_path):
  config = electra_small.get_config()
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim, config.model.embed_dim = 2, 128, 32
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 3
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 30
  losses = np.array([row['loss'] for row in rows])
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 2.0, losses
  # The pieces are logged, and the total is MLM + 50 x RTD at every step.
  for row in rows:
    assert row['loss'] == pytest.approx(row['mlm_loss'] + 50.0 * row['rtd_loss'], rel=1e-4)
  # About 15% x (1 - 1/vocab) of the tokens are replaced, the discriminator's positives.
  replaced = np.mean([row['replaced_fraction'] for row in rows])
  assert 0.05 < replaced < 0.2, replaced
