"""Tests of objectives/word2vec.py: windows, noise, subsampling, determinism, the loss."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from data import tokenizers
from models import word2vec as word2vec_model
from objectives import word2vec
from tests.models import test_word2vec as scores
from tests.objective_config import objective_config

VOCAB, SPECIAL = 40, 4  # Ids 0..3 are special (frequency 0), as BOS / EOS framing.
FREQUENCIES = np.concatenate([np.zeros(SPECIAL), 1.0 / np.arange(1, VOCAB - SPECIAL + 1)])
FREQUENCIES /= FREQUENCIES.sum()  # Zipf over the words.


def _objective(window=5, negatives=5, subsample=0.0, noise_power=0.75):
  return objective_config(
    window=window, negatives=negatives, subsample=subsample, noise_power=noise_power
  )


def _batch(rows=64, length=96, seed=0, epoch=0):
  """Rows of Zipf words in 3 framed segments (BOS = 2, EOS = 3) and some padding."""
  rng = np.random.default_rng(seed)
  tokens = rng.choice(VOCAB, size=(rows, length), p=FREQUENCIES)
  segment_ids = np.minimum(np.arange(length) // (length // 3) + 1, 3)[None].repeat(rows, 0)
  pad_start = length - rng.integers(0, 20, size=rows)
  segment_ids = np.where(np.arange(length)[None] >= pad_start[:, None], 0, segment_ids)
  starts = segment_ids != np.pad(segment_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  ends = segment_ids != np.pad(segment_ids[:, 1:], ((0, 0), (0, 1)), constant_values=-1)
  tokens = np.where(starts, 2, np.where(ends, 3, tokens))
  tokens = np.where(segment_ids == 0, 0, tokens)
  positions = np.arange(length)[None].repeat(rows, 0)
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': positions.astype(np.int32),
    'epoch': np.full(rows, epoch, np.int64),
    'example_id': np.arange(rows, dtype=np.int64),
  }


def _run(batch, seed=0, **objective):
  return word2vec.pair_preprocess(_objective(**objective), FREQUENCIES, seed)(batch)


def _within(count, n, p, sigmas=5.0):
  return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


def test_windows_stay_in_their_segment_and_hold_only_words():
  batch = _batch()
  # Unique ids per (row, position) let a context be traced back to where it came from.
  out = _run(batch)
  rows, length = batch['tokens'].shape
  segments, inputs = out['segment_ids'], out['inputs']
  assert out['contexts'].shape == (rows, length, 10)
  assert out['negatives'].shape == (rows, length, 10, 5)
  valid = out['context_weights'] > 0
  offsets = np.concatenate([np.arange(-5, 0), np.arange(1, 6)])
  source = np.clip(np.arange(length)[:, None] + offsets, 0, length - 1)  # [length, slots]
  row = np.arange(rows)[:, None, None]
  # Each context is the word `offset` places away in the compacted row, same segment.
  np.testing.assert_array_equal(out['contexts'][valid], inputs[row, source][valid])
  assert (
    segments[row, source][valid] == np.broadcast_to(segments[..., None], valid.shape)[valid]
  ).all()
  assert (segments[..., None].repeat(10, -1)[valid] > 0).all()
  # Framing and padding are never centers or contexts: only words (frequency > 0).
  assert (FREQUENCIES[out['contexts'][valid]] > 0).all()
  assert (FREQUENCIES[inputs[segments > 0]] > 0).all()
  np.testing.assert_array_equal(out['weights'], valid.any(-1))
  # Compaction keeps every word of the row, in order (no subsampling here).
  for r in range(3):
    words = batch['tokens'][r][FREQUENCIES[batch['tokens'][r]] > 0]
    np.testing.assert_array_equal(inputs[r][segments[r] > 0], words)


def test_window_sizes_are_uniform():
  window = 4
  batch = _batch(rows=256, length=128)
  out = _run(batch, window=window)
  counts = out['context_weights'].sum(-1)  # 2 b for a center away from its segment's edges.
  segments = out['segment_ids']
  slots = 2 * window
  inner = np.ones_like(segments, bool)
  for offset in range(-window, window + 1):
    shifted = np.roll(segments, -offset, axis=1)
    inner &= shifted == segments
  inner[:, :window] = inner[:, -window:] = False
  inner &= segments > 0
  reach = counts[inner] / 2
  assert reach.size > 10_000 and set(np.unique(reach)) <= set(range(1, window + 1))
  for b in range(1, window + 1):
    assert _within((reach == b).sum(), reach.size, 1 / window), (b, np.bincount(reach.astype(int)))
  assert out['contexts'].shape[-1] == slots


def test_negatives_follow_the_unigram_to_the_three_quarters():
  out = _run(_batch(rows=128, length=128))
  drawn = out['negatives'].ravel()
  noise = FREQUENCIES**0.75
  noise /= noise.sum()
  counts = np.bincount(drawn, minlength=VOCAB)
  assert counts[:SPECIAL].sum() == 0  # Specials are never noise.
  for i in range(SPECIAL, VOCAB):
    assert _within(counts[i], drawn.size, noise[i]), (i, counts[i] / drawn.size, noise[i])
  # ... and not the plain unigram: the most frequent word is drawn far less often.
  assert counts[SPECIAL] / drawn.size < FREQUENCIES[SPECIAL] - 0.03


def test_subsampling_keeps_a_word_with_probability_sqrt_t_over_f():
  batch = _batch(rows=256, length=128)
  t = 1e-3
  out = _run(batch, subsample=t)
  words = batch['tokens'][batch['segment_ids'] > 0]
  kept = out['inputs'][out['segment_ids'] > 0]
  for word in (SPECIAL, SPECIAL + 1, SPECIAL + 5):
    n, p = int((words == word).sum()), min(1.0, math.sqrt(t / FREQUENCIES[word]))
    assert _within(int((kept == word).sum()), n, p), (word, (kept == word).sum() / n, p)
  # Kept words stay in order and never leave their segment: each row's segments grow.
  assert (np.diff(np.where(out['segment_ids'] > 0, out['segment_ids'], 99), axis=1) >= 0).all()


def test_draws_depend_on_seed_epoch_and_example_only():
  batch = _batch(rows=8, length=64)
  first = _run(batch, subsample=1e-2)
  again = _run(batch, subsample=1e-2)
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  # The same example in another batch (other rows, other order) draws the same.
  flipped = {k: v[::-1] for k, v in batch.items()}
  out = _run(flipped, subsample=1e-2)
  for name in first:
    np.testing.assert_array_equal(first[name], out[name][::-1])
  next_epoch = _run({**batch, 'epoch': batch['epoch'] + 1}, subsample=1e-2)
  other_seed = _run(batch, seed=1, subsample=1e-2)
  for other in (next_epoch, other_seed):
    assert (other['negatives'] != first['negatives']).mean() > 0.5
    assert (other['inputs'] != first['inputs']).any()


def test_bad_keys_are_named():
  with pytest.raises(ValueError, match='window=0'):
    _run(_batch(rows=2), window=0)
  with pytest.raises(ValueError, match='subsample=-1'):
    _run(_batch(rows=2), subsample=-1)


def _reference_loss(positive, negative, noise_mask, weights):
  """The negative-sampling loss written out term by term."""
  total = loss = correct = 0.0
  for index in np.ndindex(weights.shape):
    if not weights[index]:
      continue
    total += 1
    loss -= math.log(1 / (1 + math.exp(-positive[index])))
    beats = True
    for k in range(negative.shape[-1]):
      if noise_mask[index + (k,)]:
        loss -= math.log(1 / (1 + math.exp(negative[index + (k,)])))
        beats &= positive[index] > negative[index + (k,)]
    correct += beats
  return loss / total, total, correct


@pytest.mark.parametrize('mode', ['skipgram', 'cbow'])
def test_loss_against_a_hand_computed_reference_under_jit(mode):
  model = word2vec_model.Word2Vec(word2vec_model.Word2VecConfig(5, d_model=2, mode=mode))
  batch = {
    'inputs': scores.INPUTS,
    'contexts': scores.CONTEXTS,
    'context_weights': scores.CONTEXT_WEIGHTS,
    'negatives': scores.NEGATIVES,
  }
  loss_and_grad = jax.jit(
    jax.value_and_grad(lambda p, b: word2vec.loss_fn(p, b, None, model=model), has_aux=True)
  )
  (loss, m), grads = loss_and_grad(scores.PARAMS, batch)
  positive, negative = (np.asarray(x, np.float64) for x in scores._scores(mode))
  if mode == 'skipgram':
    predicted, noise, weights = scores.CONTEXTS, scores.NEGATIVES, scores.CONTEXT_WEIGHTS
  else:
    predicted, noise = scores.INPUTS, scores.NEGATIVES[:, :, 0]
    weights = scores.CONTEXT_WEIGHTS.max(-1)
  expected, total, correct = _reference_loss(
    positive, negative, noise != predicted[..., None], weights
  )
  # Skip-gram: 5 weighted (center, context) pairs; CBOW: 3 centers with a context.
  assert (noise == predicted[..., None]).sum() == 1  # One noise word to skip.
  assert float(m['loss'][1]) == total == (5 if mode == 'skipgram' else 3)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(m['accuracy'][0]), correct)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert float(jnp.abs(grads['output']).sum()) > 0


def test_loss_at_init_is_ln2_per_pair_and_noise_word():
  # Zero output vectors score 0 everywhere: each term is ln 2.
  params = {'input': scores.PARAMS['input'], 'output': jnp.zeros((5, 2))}
  model = word2vec_model.Word2Vec(word2vec_model.Word2VecConfig(5, d_model=2))
  batch = {
    'inputs': scores.INPUTS,
    'contexts': scores.CONTEXTS,
    'context_weights': scores.CONTEXT_WEIGHTS,
    'negatives': scores.NEGATIVES,
  }
  loss, m = jax.jit(lambda p, b: word2vec.loss_fn(p, b, None, model=model))(params, batch)
  # Skip-gram pairs (center, context) and their noise words that differ from the context:
  # (1,2): [4, 0]; (2,1): [0, 2]; (2,3): [1, 4]; (3,2): [2 skipped, 1]; (3,4): [0, 0] -> 9.
  np.testing.assert_allclose(float(loss), (5 + 9) * math.log(2) / 5, rtol=1e-6)
  assert float(m['accuracy'][0]) == 0.0  # A tie never beats the noise.


def test_unigram_frequencies_from_a_sentencepiece_unigram_model(tmp_path):
  animals = ('cat', 'dog', 'bird', 'horse', 'mouse', 'fox', 'wolf', 'bear')
  places = ('mat', 'hill', 'river', 'forest', 'garden', 'road', 'field', 'house')
  lines = [
    f'the {a} ran to the {p} and the {b} sat by it'
    for a in animals
    for b in animals
    for p in places
  ]
  path = tokenizers.train_sentencepiece(lines, str(tmp_path / 'spm'), 36, 1000, seed=0)
  tokenizer = tokenizers.load_tokenizer(path)
  frequencies = word2vec.unigram_frequencies(tokenizer)
  assert frequencies.shape == (tokenizer.vocab_size,)
  np.testing.assert_allclose(frequencies.sum(), 1.0)
  assert (frequencies[tokenizer.special_ids] == 0).all()
  assert (np.delete(frequencies, tokenizer.special_ids) > 0).all()
  # They are the pieces' frequencies in the text the model was trained on.
  counts = np.bincount(np.concatenate([tokenizer.encode(line) for line in lines]), minlength=36)
  np.testing.assert_allclose(frequencies, counts / counts.sum(), atol=0.03)
  assert scipy.stats.spearmanr(frequencies, counts).statistic > 0.95
  bpe = tokenizers.train_sentencepiece(lines, str(tmp_path / 'bpe'), 36, 1000, model_type='bpe')
  for other in (tokenizers.load_tokenizer(bpe), SimpleNamespace(path='vocab.txt')):
    with pytest.raises(ValueError, match='SentencePiece unigram model'):
      word2vec.unigram_frequencies(other)
