"""XLM's TLM and MLM + contrastive ranking train on a parallel fixture written here."""

import json
import os

import numpy as np
import pytest

from configs import base
from data import sentence_pairs, sources
from evaluation import during_training


def _cipher(sentence: str) -> str:
  """A stand-in 'translation' with a learnable word-for-word mapping: each word reversed."""
  return ' '.join(word[::-1] for word in sentence.split())


@pytest.fixture(scope='module')
def parallel_file(tmp_path_factory) -> str:
  """600 English sentences of the embedded corpus and their cipher, 20 pairs per document."""
  sentences = []
  for doc in sources.load_documents(base.get_config().data, 'train'):
    sentences += [s for s in sentence_pairs.split_sentences(doc) if 4 <= len(s.split()) <= 20]
  path = tmp_path_factory.mktemp('parallel') / 'pairs.tsv'
  lines = [f'{s}\t{_cipher(s)}' for s in sentences[:600]]
  blocks = ['\n'.join(lines[i : i + 20]) for i in range(0, len(lines), 20)]
  path.write_text('\n\n'.join(blocks) + '\n', encoding='utf-8')
  return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['xlm_tlm', 'xlm_contrastive'])
def test_parallel_objective_trains(tmp_path, parallel_file, name):
  config = __import__(f'configs.cpu.{name}', fromlist=['get_config']).get_config()
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.data.text_files = parallel_file
  config.data.vocab_size = 1000
  config.data.eval_fraction = 0.1
  config.batch_size, config.seq_len, config.total_steps = 8, 64, 30
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 3
  config.optimizer.warmup_ratio = 0.0
  during_training.train_and_evaluate(config, str(tmp_path))

  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  key = 'total_loss' if name == 'xlm_contrastive' else 'loss'
  losses = np.array([r[key] for r in records])
  assert len(losses) == 30 and np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
  if name == 'xlm_contrastive':
    ranking = np.array([r['contrastive/accuracy'] for r in records])
    assert np.mean(ranking[-5:]) > np.mean(ranking[:5]), ranking
