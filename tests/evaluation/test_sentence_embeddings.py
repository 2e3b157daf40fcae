"""Sentence embeddings: pooling by hand, batching order, STS Spearman."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from evaluation import sentence_embeddings


def test_pool_mean_and_cls_by_hand():
  hidden = jnp.asarray(
    [[[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]], [[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]]], jnp.float32
  )
  segment_ids = jnp.asarray([[1, 1, 0], [1, 0, 0]])
  mean = np.asarray(sentence_embeddings.pool(hidden, segment_ids, 'mean'))
  np.testing.assert_allclose(mean[0], np.array([2.0, 2.0]) / np.sqrt(8), rtol=1e-6)  # Padding out.
  np.testing.assert_allclose(mean[1], [0.0, 1.0], rtol=1e-6)
  cls = np.asarray(sentence_embeddings.pool(hidden, segment_ids, 'cls'))
  np.testing.assert_allclose(cls[0], [0.6, 0.8], rtol=1e-6)
  with pytest.raises(ValueError, match='pooling'):
    sentence_embeddings.pool(hidden, segment_ids, 'max')


def test_embed_keeps_input_order_across_length_sorted_batches():
  tokenizer = types.SimpleNamespace(
    cls_id=1, sep_id=2, pad_id=0, encode=lambda s: np.array([10 + len(w) for w in s.split()])
  )
  sentences = ['a bb ccc', 'dddd', 'e ff', 'g h i j k l', 'mm']

  def encode(tokens, segment_ids):
    # The embedding of a row: (its real length, its first word's id): checks rows stay put.
    return np.stack([segment_ids.sum(1), tokens[:, 1]], -1).astype(np.float32)

  out = sentence_embeddings.embed(encode, tokenizer, sentences, batch_size=2, length_step=4)
  lengths = [len(s.split()) + 2 for s in sentences]
  firsts = [10 + len(s.split()[0]) for s in sentences]
  np.testing.assert_array_equal(out, np.stack([lengths, firsts], -1))


def test_sts_spearman_is_x100_of_the_rank_correlation_of_cosines():
  first = np.eye(4, dtype=np.float32)
  second = np.array([[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 1], [0, 0, 0.2, 0.8]], np.float32)
  # Cosines (dot products) 1, 0.5, 0, 0.8 against gold 5, 3, 1, 4: same order -> 100.
  assert sentence_embeddings.sts_spearman(first, second, np.array([5, 3, 1, 4])) == pytest.approx(
    100
  )
  assert sentence_embeddings.sts_spearman(first, second, np.array([1, 3, 5, 2])) == pytest.approx(
    -100
  )
