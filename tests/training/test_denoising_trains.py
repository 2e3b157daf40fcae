"""BART denoising and MASS train through the real training loop at tiny width (CPU)."""

import json
import os

import numpy as np
import pytest

from configs.cpu import bart as bart_base
from configs.cpu import mass
from evaluation import during_training


@pytest.mark.parametrize('config_module', [bart_base, mass], ids=['bart', 'mass'])
def test_loss_falls_at_tiny_width(tmp_path, spm_path, config_module):
  config = config_module.get_config()
  config.model.num_layers, config.model.num_decoder_layers = 2, 2
  config.model.d_model, config.model.num_heads, config.model.mlp_dim = 64, 2, 128
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 15
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 2
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    losses = [json.loads(line)['loss'] for line in f if 'loss' in json.loads(line)]
  assert len(losses) == 15 and np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
