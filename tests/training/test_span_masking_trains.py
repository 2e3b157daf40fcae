"""SpanBERT (span masking + the span boundary objective) trains a tiny BERT through the
real training loop (CPU); span masking alone is the same path without the SBO head."""

import json
import os

import numpy as np
import pytest

from configs.cpu import spanbert_sbo
from evaluation import during_training


@pytest.mark.slow
def test_spanbert_trains_at_tiny_width_and_logs_both_parts(tmp_path, spm_path):
  config = spanbert_sbo.get_config()
  config.model.preset = 'bert-base'
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 3
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 30
  # Chance is ln(1000) = 6.9 for both parts; each falls well below its first steps.
  for key in ('loss', 'span_boundary/loss'):
    losses = np.array([r[key] for r in records])
    assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, key
  for r in records:
    np.testing.assert_allclose(r['total_loss'], r['loss'] + r['span_boundary/loss'], rtol=1e-4)
