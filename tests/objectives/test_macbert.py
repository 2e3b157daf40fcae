"""Tests of objectives/macbert.py: n-gram selection, similar-word replacement, determinism."""

import math

import numpy as np
import pytest
import scipy.stats

from data import word_units
from data.wordpiece import WordPieceTokenizer
from objectives import macbert, mlm
from tests.objective_config import objective_config

SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
NUM_WORDS, NUM_SUFFIXES = 600, 40
WORDS = [f'w{i}' for i in range(NUM_WORDS)] + [f'##c{i}' for i in range(NUM_SUFFIXES)]
CHINESE = list('我们喜欢自然语言处理今天天气很好')
FIRST_WORD = len(SPECIAL)  # Id of 'w0'; ids of '##c*' follow the words.
NGRAM_PROBS = np.array([0.4, 0.3, 0.2, 0.1])


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
  """One tokenizer for the module, so the similar-word tables built for it are cached."""
  path = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
  path.write_text('\n'.join(SPECIAL + WORDS + CHINESE) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path))


def _objective(**kw):
  d = dict(
    mask_rate=0.15,
    mask_token_rate=0.8,
    random_token_rate=0.1,
    ngram_probs=tuple(NGRAM_PROBS),
    synonyms_path='',
    embeddings_path='',
    num_neighbours=1,
    embeddings_max_words=50_000,
    word_segmenter='',
  )
  d.update(kw)
  return objective_config(**d)


def _batch(tok, batch_size=256, length=256, seed=0, epoch=0):
  """Two framed segments per row of words of 1-3 pieces, some [UNK], a padded tail."""
  rng = np.random.default_rng(seed)
  starts = rng.integers(FIRST_WORD, FIRST_WORD + NUM_WORDS, size=(batch_size, length))
  suffixes = FIRST_WORD + NUM_WORDS + rng.integers(0, NUM_SUFFIXES, size=(batch_size, length))
  tokens = np.where(rng.random(tokens_shape := (batch_size, length)) < 0.3, suffixes, starts)
  tokens = np.where(rng.random(tokens_shape) < 0.02, tok.unk_id, tokens)
  half = length // 2
  tokens[:, 0], tokens[:, half - 1], tokens[:, half], tokens[:, -1] = (
    tok.cls_id,
    tok.sep_id,
    tok.cls_id,
    tok.sep_id,
  )
  segment_ids = np.where(np.arange(length) < half, 1, 2)[None].repeat(batch_size, 0)
  padding = np.arange(length)[None] >= (length - rng.integers(0, 40, batch_size))[:, None]
  return {
    'tokens': np.where(padding, tok.pad_id, tokens).astype(np.int32),
    'segment_ids': np.where(padding, 0, segment_ids).astype(np.int32),
    'positions': np.zeros(tokens_shape, np.int32),
    'epoch': np.full(batch_size, epoch),
    'example_id': np.arange(batch_size),
  }


def _synonyms(tmp_path, lines) -> str:
  path = tmp_path / 'synonyms.tsv'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return str(path)


@pytest.fixture(scope='module')
def full_table(tmp_path_factory) -> tuple[str, dict]:
  """Every word of up to two pieces has similar words: (file, {pieces: {candidate pieces}})."""
  tmp_path = tmp_path_factory.mktemp('table')
  lines, expected = [], {}
  for i in range(NUM_WORDS):
    # Two candidates, and one of another piece count that must be dropped.
    lines.append(f'w{i}\tw{(i + 7) % NUM_WORDS} w{(i + 13) % NUM_WORDS} w{i}c1')
    expected[(FIRST_WORD + i,)] = {
      (FIRST_WORD + (i + 7) % NUM_WORDS,),
      (FIRST_WORD + (i + 13) % NUM_WORDS,),
    }
    for j in range(NUM_SUFFIXES):
      lines.append(f'w{i}c{j}\tw{(i + 1) % NUM_WORDS}c{(j + 1) % NUM_SUFFIXES}')
      suffix = FIRST_WORD + NUM_WORDS
      expected[(FIRST_WORD + i, suffix + j)] = {
        (FIRST_WORD + (i + 1) % NUM_WORDS, suffix + (j + 1) % NUM_SUFFIXES)
      }
  return _synonyms(tmp_path, lines), expected


def _words(tok, batch):
  """Word starts [batch, length] and each position's word's first position."""
  starts = word_units.token_word_starts(
    batch['tokens'], batch['segment_ids'], word_units.word_start_table(tok), tok.special_ids
  )
  return starts, word_units.word_start_positions(starts)


def _candidates(tok, batch):
  return (batch['segment_ids'] > 0) & ~np.isin(batch['tokens'], tok.special_ids)


def _within(x, p, sigma, sigmas=5.0):
  assert abs(x - p) <= sigmas * sigma, (x, p, sigma)


def test_ngram_lengths_coverage_and_integrity(tok):
  batch = _batch(tok, batch_size=1024)
  cfg = _objective()
  first, _ = macbert.make_ngrams(cfg, tok, seed=5)(batch)
  inputs, selected = macbert.make_masker(cfg, tok, seed=5)(batch)
  starts, word_first = _words(tok, batch)
  rows = np.arange(len(first))[:, None]
  candidates = _candidates(tok, batch)
  assert not (selected & ~candidates).any()  # Never special tokens or padding.
  # An n-gram is whole words, and selection is all-or-nothing per n-gram.
  np.testing.assert_array_equal(first[rows, word_first], first)
  np.testing.assert_array_equal(selected, selected[rows, first] & candidates)

  # The selected n-grams' lengths in words, per row (a test may loop over rows).
  lengths, room = [], []
  for r in range(len(first)):
    word_starts = np.flatnonzero(starts[r])
    cand, gram = candidates[r, word_starts], first[r, word_starts]
    begins = np.flatnonzero(cand & (gram == word_starts))  # Word index of each n-gram's start.
    ends = np.r_[np.flatnonzero(gram[1:] != gram[:-1]) + 1, len(gram)]
    size = ends[np.searchsorted(ends, begins, side='right')] - begins
    # Words left in the n-gram's run: a start with room for any length is never cut short.
    breaks = np.r_[np.flatnonzero(~cand), len(cand)]
    left = breaks[np.searchsorted(breaks, begins)] - begins
    keep = selected[r, word_starts[begins]]
    lengths.append(size[keep])
    room.append(left[keep] >= len(NGRAM_PROBS))
  lengths, room = np.concatenate(lengths), np.concatenate(room)
  assert lengths.min() >= 1 and lengths.max() <= len(NGRAM_PROBS)
  observed = np.bincount(lengths[room], minlength=len(NGRAM_PROBS) + 1)[1:]
  assert len(observed) == len(NGRAM_PROBS) and observed.sum() > 10_000
  p = scipy.stats.chisquare(observed, NGRAM_PROBS * observed.sum()).pvalue
  assert p > 1e-4, (observed / observed.sum(), p)

  # 15% of the words (MacBERT counts words), in n-grams of mean 2 words: variance
  # factor E[n^2] / E[n] over a binomial of words.
  word_level = starts & candidates
  n_words = word_level.sum()
  factor = (NGRAM_PROBS * np.arange(1, 5) ** 2).sum() / (NGRAM_PROBS * np.arange(1, 5)).sum()
  sigma = math.sqrt(factor * 0.15 * 0.85 / n_words)
  _within((selected & word_level).sum() / n_words, 0.15, sigma)
  # No [MASK] token ever reaches the model, and unselected positions are untouched.
  assert not (inputs == tok.mask_id).any()
  np.testing.assert_array_equal(inputs[~selected], batch['tokens'][~selected])


def test_similar_random_kept_split_from_table(tok, full_table):
  path, expected = full_table
  # Words of at most two pieces, so every selected word has similar words.
  batch = _batch(tok, batch_size=512)
  tokens = batch['tokens']
  starts, word_first = _words(tok, batch)
  # Turn the second suffix of any 3-piece word, and a suffix after a special token
  # (a word of its own), into a word start.
  follows_suffix = np.zeros_like(starts)
  follows_suffix[:, 2:] = ~starts[:, 1:-1] & ~starts[:, 2:]
  special = np.isin(tokens, tok.special_ids)
  follows_special = np.zeros_like(starts)
  follows_special[:, 1:] = (
    special[:, :-1] & ~special[:, 1:] & (tokens[:, 1:] >= FIRST_WORD + NUM_WORDS)
  )
  tokens[follows_suffix | follows_special] = FIRST_WORD
  starts, word_first = _words(tok, batch)
  cfg = _objective(synonyms_path=path)
  first, _ = macbert.make_ngrams(cfg, tok, seed=2)(batch)
  inputs, selected = macbert.make_masker(cfg, tok, seed=2)(batch)

  counts = {'similar': 0, 'random': 0, 'kept': 0}
  for r, g in zip(*np.nonzero(selected & (first == np.arange(first.shape[1])[None])), strict=True):
    gram = np.flatnonzero(first[r] == g)
    words = [gram[word_first[r, gram] == w] for w in np.unique(word_first[r, gram])]
    if (inputs[r, gram] == tokens[r, gram]).all():
      counts['kept'] += 1
    elif all(tuple(inputs[r, w]) in expected[tuple(tokens[r, w])] for w in words):
      counts['similar'] += 1
    else:
      counts['random'] += 1
  n = sum(counts.values())
  assert n > 3000
  # A random replacement equals the original or a similar word with odds ~1/600 per piece.
  for kind, p in (('similar', 0.8), ('random', 0.1), ('kept', 0.1)):
    _within(counts[kind] / n, p, math.sqrt(p * (1 - p) / n))


def test_similar_words_are_the_tables(tok, full_table):
  path, expected = full_table
  batch = _batch(tok, batch_size=64)
  tokens = batch['tokens']
  starts, word_first = _words(tok, batch)
  cfg = _objective(synonyms_path=path, random_token_rate=0.0, mask_token_rate=1.0)
  inputs, selected = macbert.make_masker(cfg, tok, seed=0)(batch)
  changed, no_mask = 0, True
  for r, w in zip(*np.nonzero(selected & starts), strict=True):
    word = np.flatnonzero(word_first[r] == w)
    key = tuple(tokens[r, word])
    if key in expected:
      assert tuple(inputs[r, word]) in expected[key], (key, inputs[r, word])
      changed += 1
    else:  # Three-piece words are not in the table: random pieces, never [MASK].
      no_mask &= not (inputs[r, word] == tok.mask_id).any()
  assert changed > 300 and no_mask


def test_without_table_falls_back_to_random_words(tok, caplog):
  batch = _batch(tok, batch_size=1024)
  cfg = _objective(mask_token_rate=0.8, random_token_rate=0.1)
  macbert.similar_words.cache_clear()  # The empty table is built, and logged, afresh.
  with caplog.at_level('WARNING'):
    mask = macbert.make_masker(cfg, tok, seed=4)
  assert 'fall back to random words' in caplog.text
  inputs, selected = mask(batch)
  first, _ = macbert.make_ngrams(cfg, tok, seed=4)(batch)
  assert not (inputs == tok.mask_id).any()
  # Changed tokens per n-gram: kept n-grams (10%) change none; the other 90% draw
  # random pieces, all of which equal the originals with odds ~1/650 per piece.
  rows = np.arange(len(first))[:, None]
  changed = np.zeros(first.shape, np.int64)
  np.add.at(changed, (rows.repeat(first.shape[1], 1), first), inputs != batch['tokens'])
  grams = selected & (first == np.arange(first.shape[1])[None])
  n = grams.sum()
  assert n > 10_000
  _within((changed[grams] == 0).mean(), 0.1, math.sqrt(0.09 / n))


def test_embedding_nearest_neighbours(tok, tmp_path):
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(tok.vocab_size, 16)).astype(np.float32)
  npy = tmp_path / 'emb.npy'
  np.save(npy, vectors)
  batch = _batch(tok, batch_size=64)
  tokens = batch['tokens']
  starts, word_first = _words(tok, batch)
  cfg = _objective(embeddings_path=str(npy), mask_token_rate=1.0, random_token_rate=0.0)
  inputs, selected = macbert.make_masker(cfg, tok, seed=1)(batch)
  # Brute force: cosine over the single-piece words (non-special word-start pieces).
  words = np.arange(FIRST_WORD, FIRST_WORD + NUM_WORDS)
  words = np.r_[words, [tok.encode(c)[0] for c in CHINESE]]
  unit = vectors[words] / np.linalg.norm(vectors[words], axis=1, keepdims=True)
  sims = unit @ unit.T
  np.fill_diagonal(sims, -np.inf)
  nearest = dict(zip(words, words[sims.argmax(1)], strict=True))
  next_starts = np.concatenate([starts[:, 1:], np.ones_like(starts[:, :1])], axis=1)
  single = selected & starts & next_starts & np.isin(tokens, words)
  assert single.sum() > 300
  np.testing.assert_array_equal(inputs[single], [nearest[t] for t in tokens[single]])
  # Multi-piece words have no neighbour in a piece table: random pieces.
  multi = selected & ~single & (word_first == np.arange(tokens.shape[1])[None])
  assert multi.sum() > 100 and (inputs[multi] != tokens[multi]).mean() > 0.95


def test_word_vector_file_keeps_piece_count(tok, tmp_path):
  # 'w1' is nearest to 'w2c3' (another piece count) but must take 'w3'; 'w2c3' takes 'w4c5'.
  lines = ['5 3', 'w1 1 0 0', 'w2c3 1 0.01 0', 'w3 0.9 0.5 0', 'w4c5 0 1 0', 'w6 -1 0 0']
  path = tmp_path / 'vectors.txt'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  table = macbert.read_embeddings(str(path), tok, k=1, max_words=100)
  ids = lambda word: tuple(int(i) for i in tok.encode(word))  # noqa: E731
  assert table[ids('w1')] == [ids('w3')]
  assert table[ids('w2c3')] == [ids('w4c5')]
  assert table[ids('w6')] == [ids('w3')]
  assert len(table) == 5


def test_synonym_file_parsing(tok, tmp_path):
  path = _synonyms(tmp_path, ['# comment', '', 'w1\tw2 w1 w3c4 w2 w9', 'w1\tw5', 'w4c4\tw5c5 w6'])
  table = macbert.read_synonyms(path, tok)
  ids = lambda word: tuple(int(i) for i in tok.encode(word))  # noqa: E731
  assert table == {
    ids('w1'): [ids('w2'), ids('w9'), ids('w5')],
    ids('w4c4'): [ids('w5c5')],
  }
  with pytest.raises(ValueError, match='synonym'):
    macbert.read_synonyms(_synonyms(tmp_path, ['w1 w2']), tok)


def test_chinese_words_with_jieba(tok, tmp_path):
  text = '我们喜欢自然语言处理今天天气很好'
  words = word_units.jieba_segmenter()(text)
  # Each word's similar word: the same length, other characters of the vocabulary.
  synonyms = {w: ''.join(CHINESE[(CHINESE.index(c) + 3) % len(CHINESE)] for c in w) for w in words}
  path = _synonyms(tmp_path, [f'{w}\t{s}' for w, s in synonyms.items()])
  ids = tok.encode(text)
  row = np.r_[tok.cls_id, ids, tok.sep_id]
  n = 400
  batch = {
    'tokens': np.tile(row, (n, 1)).astype(np.int32),
    'segment_ids': np.ones((n, len(row)), np.int32),
    'positions': np.zeros((n, len(row)), np.int32),
    'epoch': np.zeros(n),
    'example_id': np.arange(n),
  }
  cfg = _objective(
    synonyms_path=path, word_segmenter='jieba', mask_token_rate=1.0, random_token_rate=0.0
  )
  inputs, selected = macbert.make_masker(cfg, tok, seed=0)(batch)
  offsets = np.cumsum([0] + [len(w) for w in words])
  for w, lo, hi in zip(words, offsets[:-1] + 1, offsets[1:] + 1, strict=True):
    sel = selected[:, lo:hi]
    assert (sel.all(1) | ~sel.any(1)).all()  # Whole jieba words.
    replaced = inputs[sel.all(1), lo:hi]
    np.testing.assert_array_equal(replaced, np.tile(tok.encode(synonyms[w]), (len(replaced), 1)))
  assert selected.any()


def test_determinism_and_batch_layout(tok, full_table):
  path, _ = full_table
  batch = _batch(tok, batch_size=32)
  cfg = _objective(synonyms_path=path)
  preprocess = macbert.make_preprocess(cfg, tok, seed=1)
  out = preprocess(batch)
  reference = mlm.make_preprocess(cfg, tok, seed=1)(batch)
  assert out.keys() == reference.keys()
  for key in out:
    assert out[key].dtype == reference[key].dtype and out[key].shape == reference[key].shape
  np.testing.assert_array_equal(out['targets'], batch['tokens'])
  # Same (seed, epoch, example id): same corruption in any batch order and size.
  order = np.random.default_rng(0).permutation(32)[:13]
  part = preprocess({k: v[order] for k, v in batch.items()})
  for key in ('inputs', 'weights'):
    np.testing.assert_array_equal(part[key], out[key][order])
  other = preprocess({**batch, 'epoch': batch['epoch'] + 1})
  assert (other['weights'] != out['weights']).any()


def test_config_errors(tok, tmp_path):
  with pytest.raises(ValueError, match='ngram_probs'):
    macbert.make_masker(_objective(ngram_probs=(0.5, 0.3)), tok, seed=0)
  with pytest.raises(ValueError, match='both set'):
    macbert.make_masker(_objective(synonyms_path='a', embeddings_path='b'), tok, seed=0)
  np.save(tmp_path / 'bad.npy', np.zeros((3, 4)))
  with pytest.raises(ValueError, match='vocab_size'):
    macbert.make_masker(_objective(embeddings_path=str(tmp_path / 'bad.npy')), tok, seed=0)
