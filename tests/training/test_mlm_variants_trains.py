"""MacBERT's and ERNIE's masking train a tiny BERT through the real training loop (CPU)."""

import json
import os

import numpy as np
import pytest

from configs.cpu import ernie, macbert
from data import tokenizers
from evaluation import during_training


def _synonym_table(spm_path: str, path: str) -> str:
  """A made-up synonym table over the word-start pieces: each word's similar words are
  its neighbours in the vocabulary (enough to exercise the similar-word path)."""
  tokenizer = tokenizers.load_tokenizer(spm_path)
  words = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  words = [w[1:] for w in words if w.startswith('▁') and len(w) > 1]
  with open(path, 'w', encoding='utf-8') as f:
    for i, word in enumerate(words):
      f.write(f'{word}\t{words[i - 1]} {words[(i + 1) % len(words)]}\n')
  return path


@pytest.mark.slow
@pytest.mark.parametrize('name', ['macbert', 'ernie'])
def test_mlm_variant_trains_at_tiny_width(tmp_path, spm_path, name):
  config = {'macbert': macbert, 'ernie': ernie}[name].get_config()
  if name == 'macbert':
    config.objective.synonyms_path = _synonym_table(spm_path, str(tmp_path / 'synonyms.tsv'))
  config.model.preset = 'bert-base'
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 3
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path / 'run'))

  with open(os.path.join(tmp_path, 'run', 'metrics.jsonl')) as f:
    losses = [json.loads(line)['loss'] for line in f]
  assert len(losses) == 30 and np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
