"""Tests of data/word_units.py and objectives/wwm.py."""

import math

import numpy as np

from data import word_units
from data.wordpiece import WordPieceTokenizer
from objectives import wwm
from tests.objective_config import objective_config

SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
WORDS = [f'w{i}' for i in range(60)] + [f'##c{i}' for i in range(40)]
CHINESE = list('我们喜欢自然语言处理今天天气很好')


def _tokenizer(tmp_path):
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(SPECIAL + WORDS + CHINESE) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path))


def _objective(**kw):
  d = dict(mask_rate=0.15, mask_token_rate=0.8, random_token_rate=0.1, word_segmenter='')
  d.update(kw)
  return objective_config(**d)


def _batch(tok, batch_size=256, length=256, seed=0, epoch=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, 5 + len(WORDS), size=(batch_size, length))
  tokens[:, 0], tokens[:, length // 2] = tok.cls_id, tok.sep_id
  tokens = np.where(rng.random(tokens.shape) < 0.03, tok.unk_id, tokens)
  segment_ids = np.where(np.arange(length) < length // 2, 1, 2)[None].repeat(batch_size, 0)
  padding = np.arange(length)[None] >= (length - rng.integers(0, 40, batch_size))[:, None]
  segment_ids = np.where(padding, 0, segment_ids)
  tokens = np.where(padding, tok.pad_id, tokens)
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': np.zeros_like(tokens, np.int32),
    'epoch': np.full(batch_size, epoch),
    'example_id': np.arange(batch_size),
  }


def test_start_table(tmp_path):
  tok = _tokenizer(tmp_path)
  table = word_units.word_start_table(tok)
  assert table[tok.special_ids].all()
  assert table[5:65].all() and not table[65:105].any()


def test_whole_words_coverage_and_split(tmp_path):
  tok = _tokenizer(tmp_path)
  batch = _batch(tok)
  inputs, selected = wwm.make_masker(_objective(), tok, seed=3)(batch)
  tokens = batch['tokens']
  special = np.isin(tokens, tok.special_ids)
  assert not (selected & (special | (batch['segment_ids'] == 0))).any()
  starts = word_units.token_word_starts(
    tokens, batch['segment_ids'], word_units.word_start_table(tok), tok.special_ids
  )
  first = word_units.word_start_positions(starts)
  rows = np.arange(tokens.shape[0])[:, None]
  # Whole-word integrity: every token has its word's selection and action.
  np.testing.assert_array_equal(selected, selected[rows, first] & ~special)
  # A random replacement may draw the original token, so compare [MASK] or not per word.
  kind = inputs == tok.mask_id
  np.testing.assert_array_equal(kind[selected], kind[rows, first][selected])
  candidates = (batch['segment_ids'] > 0) & ~special
  n, k = candidates.sum(), selected.sum()
  # Words are correlated units (~1.7 tokens): allow 5 sigma with a 2x variance factor.
  assert abs(k / n - 0.15) < 5 * math.sqrt(2 * 0.15 * 0.85 / n), k / n
  word_first = selected & starts
  w = word_first.sum()
  masked = (word_first & (inputs == tok.mask_id)).sum() / w
  kept = (word_first & (inputs == tokens)).sum() / w
  for p, q in ((masked, 0.8), (kept, 0.1 + 0.1 / (len(WORDS) + len(CHINESE)))):
    assert abs(p - q) < 5 * math.sqrt(q * (1 - q) / w), (p, q)


def test_determinism(tmp_path):
  tok = _tokenizer(tmp_path)
  batch = _batch(tok, batch_size=32)
  mask = wwm.make_masker(_objective(), tok, seed=1)
  a = mask(batch)
  half = {k: v[16:] for k, v in batch.items()}
  b = mask(half)
  np.testing.assert_array_equal(a[1][16:], b[1])
  other = mask({**batch, 'epoch': batch['epoch'] + 1})
  assert (other[1] != a[1]).any()


def test_chinese_word_starts():
  chars = list('我们喜欢自然语言处理')
  flags = word_units.chinese_word_starts(chars, [2, 2, 4, 2])
  np.testing.assert_array_equal(flags, [1, 0, 1, 0, 1, 0, 0, 0, 1, 0])
  jieba_flags = word_units.chinese_word_starts(chars, word_units.jieba_segmenter())
  assert jieba_flags[0] and not jieba_flags[1] and jieba_flags.sum() < len(chars)


def test_chinese_wwm_masks_jieba_words(tmp_path):
  tok = _tokenizer(tmp_path)
  ids = tok.encode('我们喜欢自然语言处理今天天气很好')
  assert len(ids) == 16
  length = 18
  row = np.r_[tok.cls_id, ids, tok.sep_id]
  batch = {
    'tokens': np.tile(row, (400, 1)).astype(np.int32),
    'segment_ids': np.ones((400, length), np.int32),
    'positions': np.zeros((400, length), np.int32),
    'epoch': np.zeros(400),
    'example_id': np.arange(400),
  }
  _, selected = wwm.make_masker(_objective(word_segmenter='jieba'), tok, seed=0)(batch)
  flags = word_units.chinese_word_starts(
    list('我们喜欢自然语言处理今天天气很好'), word_units.jieba_segmenter()
  )
  word = np.cumsum(flags)
  sel = selected[:, 1:-1]
  for w in np.unique(word):
    cols = sel[:, word == w]
    assert (cols.all(1) | ~cols.any(1)).all()
  assert sel.any()
