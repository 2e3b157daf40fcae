"""The families outside the Transformer (ELMo, word2vec) train through the real loop (CPU)."""

import json
import os

import numpy as np
import pytest

from configs.cpu import elmo as elmo_config
from configs.cpu import word2vec as word2vec_config
from evaluation import during_training


def _losses(workdir) -> list[float]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['loss'] for line in f]


def _tiny(config, spm_path, steps, learning_rate):
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 32, steps
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = learning_rate, 2
  config.optimizer.warmup_ratio = 0.0
  return config


@pytest.mark.slow
def test_elmo_trains_at_tiny_width(tmp_path, spm_path):
  config = _tiny(elmo_config.get_config(), spm_path, steps=12, learning_rate=1e-2)
  config.model.d_model = 32
  during_training.train_and_evaluate(config, str(tmp_path))
  losses = _losses(tmp_path)
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses


@pytest.mark.slow
@pytest.mark.parametrize('preset', ['word2vec-skipgram', 'word2vec-cbow'])
def test_word2vec_trains_at_tiny_width(tmp_path, spm_path, preset):
  config = _tiny(word2vec_config.get_config(), spm_path, steps=12, learning_rate=3e-2)
  config.model.preset, config.model.d_model = preset, 32
  config.objective.subsample = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))
  losses = _losses(tmp_path)
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2, losses
