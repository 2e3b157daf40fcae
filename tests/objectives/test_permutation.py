"""Tests of objectives/permutation.py: factorization orders, partial prediction, the loss."""

import math
from types import SimpleNamespace

import flax.linen as nn
import jax
import numpy as np
import pytest
import scipy.stats

from models import xlnet
from objectives import permutation
from tests.objective_config import objective_config

TOKENIZER = SimpleNamespace(
  vocab_size=40, pad_id=0, cls_id=31, sep_id=32, special_ids=np.array([0, 1, 31, 32, 33])
)


def _objective(fraction=6, chunks=2):
  return objective_config(num_predict_fraction=fraction, num_chunks=chunks)


def _rows(size, length, seed=0, epoch=0, ids=None):
  """Packed rows: documents of random lengths framed [CLS] .. [SEP], some specials inside,
  a padded tail."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, 31, (size, length))
  tokens = np.where(rng.random((size, length)) < 0.05, 33, tokens)  # Specials inside.
  starts = rng.random((size, length)) < 0.08
  starts[:, 0] = True
  segment_ids = np.cumsum(starts, axis=1)
  pad = length - rng.integers(0, length // 4, size)
  segment_ids = np.where(np.arange(length) >= pad[:, None], 0, segment_ids)
  ends = np.ones_like(starts)
  ends[:, :-1] = segment_ids[:, 1:] != segment_ids[:, :-1]
  tokens = np.where(starts, TOKENIZER.cls_id, np.where(ends, TOKENIZER.sep_id, tokens))
  tokens = np.where(segment_ids == 0, 0, tokens)
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': np.zeros((size, length), np.int32),
    'epoch': np.full(size, epoch, np.int64),
    'example_id': np.arange(size, dtype=np.int64) if ids is None else np.asarray(ids),
  }


def _pieces(rows, chunks):
  """{(row, chunk, segment): positions of its ordinary tokens}, by loops."""
  out = {}
  size, length = rows['tokens'].shape
  for b in range(size):
    for p in range(length):
      segment, token = rows['segment_ids'][b, p], rows['tokens'][b, p]
      if segment > 0 and token not in TOKENIZER.special_ids:
        out.setdefault((b, p // (length // chunks), segment), []).append(p)
  return out


@pytest.mark.parametrize('fraction, chunks', [(6, 2), (7, 1), (3, 4)])
def test_each_piece_predicts_the_last_fraction_of_a_permutation(fraction, chunks):
  rows = _rows(64, 96)
  ranks, order = permutation.sample_ranks(rows, TOKENIZER.special_ids, 0, fraction, chunks)
  pieces = _pieces(rows, chunks)
  ordered = np.zeros_like(ranks, bool)
  for (b, _, _), positions in pieces.items():
    n = len(positions)
    ordered[b, positions] = True
    np.testing.assert_array_equal(np.sort(order[b, positions]), np.arange(n))  # A permutation.
    predicted = n // fraction
    # Ranks 1..predicted go to the last `predicted` of the order, in that order.
    expected = np.maximum(order[b, positions] - (n - predicted) + 1, 0)
    np.testing.assert_array_equal(ranks[b, positions], expected)
  # Specials and padding: no order, never predicted.
  assert (order[~ordered] == -1).all() and (ranks[~ordered] == 0).all()


def test_preprocess_batch_and_prediction_slots():
  rows = _rows(32, 96, seed=3)
  out = permutation.make_preprocess(_objective(), TOKENIZER, seed=5)(rows)
  ranks, weights = out['ranks'], out['weights']
  np.testing.assert_array_equal(out['inputs'], rows['tokens'])
  np.testing.assert_array_equal(out['targets'], rows['tokens'])
  np.testing.assert_array_equal(weights, ranks > 0)
  assert not np.isin(out['targets'][weights > 0], TOKENIZER.special_ids).any()
  assert out['target_positions'].shape == out['target_weights'].shape == (32, 2, 96 // 2 // 6)
  for b in range(32):
    for c in range(2):
      used = out['target_weights'][b, c] > 0
      expected = np.flatnonzero(weights[b, c * 48 : (c + 1) * 48])
      np.testing.assert_array_equal(out['target_positions'][b, c][used], expected)
      assert (out['target_positions'][b, c][~used] == 0).all()


def test_orders_are_uniform():
  """One piece of 6 ordinary tokens, K = 3: the (first, second) predicted positions are one
  of 30 ordered pairs, each with probability 1/30 (chi-square over 30,000 rows)."""
  size = 30_000
  tokens = np.array([[31, 5, 6, 7, 8, 9, 10, 32]] * size, np.int32)
  rows = {
    'tokens': tokens,
    'segment_ids': np.ones_like(tokens),
    'epoch': np.zeros(size, np.int64),
    'example_id': np.arange(size, dtype=np.int64),
  }
  ranks, _ = permutation.sample_ranks(rows, TOKENIZER.special_ids, 7, 3, 1)
  assert ((ranks > 0).sum(1) == 2).all()
  first, second = np.argmax(ranks == 1, axis=1), np.argmax(ranks == 2, axis=1)
  assert ((first >= 1) & (first <= 6) & (second >= 1) & (second <= 6) & (first != second)).all()
  cells = np.bincount((first - 1) * 6 + (second - 1), minlength=36).reshape(6, 6)
  assert (np.diag(cells) == 0).all()
  observed = cells[~np.eye(6, dtype=bool)]
  assert scipy.stats.chisquare(observed).pvalue > 1e-6, observed


def test_sampling_is_a_function_of_seed_epoch_and_example():
  rows = _rows(16, 64, ids=np.arange(100, 116))
  ranks, _ = permutation.sample_ranks(rows, TOKENIZER.special_ids, 0, 6, 2)
  # Other batch compositions: reversed, and a batch of the first 5 rows.
  reverse = {k: v[::-1] for k, v in rows.items()}
  np.testing.assert_array_equal(
    permutation.sample_ranks(reverse, TOKENIZER.special_ids, 0, 6, 2)[0], ranks[::-1]
  )
  first5 = {k: v[:5] for k, v in rows.items()}
  np.testing.assert_array_equal(
    permutation.sample_ranks(first5, TOKENIZER.special_ids, 0, 6, 2)[0], ranks[:5]
  )
  # Another epoch or seed permutes afresh.
  next_epoch = dict(rows, epoch=rows['epoch'] + 1)
  for other, seed in ((next_epoch, 0), (rows, 1)):
    other_ranks, _ = permutation.sample_ranks(other, TOKENIZER.special_ids, seed, 6, 2)
    assert ((other_ranks > 0) != (ranks > 0)).mean() > 0.05


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match='num_predict_fraction=1'):
    permutation.make_preprocess(_objective(fraction=1), TOKENIZER, 0)
  preprocess = permutation.make_preprocess(_objective(chunks=3), TOKENIZER, 0)
  with pytest.raises(ValueError, match='seq_len=64 must split into objective.num_chunks=3'):
    preprocess(_rows(2, 64))


# The hand-computed reference: XLNet written as loops over queries and visible keys, in
# float64, from the definitions (not from the model's masks, gathers or einsums).


def _layer_norm(x, p, eps=1e-12):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _position(distance, d):
  inv_freq = 1 / 10000 ** (np.arange(0, d, 2) / d)
  return np.concatenate([np.sin(distance * inv_freq), np.cos(distance * inv_freq)])


def _reference_chunk(p, tokens, segments, ranks, targets, mem=None, mem_segments=None):
  """One row, one chunk: (logits [predictions, vocab], the layers' inputs as memory)."""
  emb = p['xlnet']['word_embedding']['embedding']
  d = emb.shape[1]
  m = 0 if mem is None else len(mem_segments)
  h = emb[tokens]
  g = np.repeat(p['xlnet']['mask_emb'][None], len(targets), 0)
  layer_inputs = []
  for index in range(len([k for k in p['xlnet'] if k.startswith('layer_')])):
    w = p['xlnet'][f'layer_{index}']
    layer_inputs.append(h)
    keys = h if mem is None else np.concatenate([mem[index], h])
    key_segments = segments if mem is None else np.concatenate([mem_segments, segments])

    def attend(x, positions, strict, w=w, keys=keys, key_segments=key_segments):
      out = np.zeros_like(x)
      for a, i in enumerate(positions):
        seen = []
        for j in range(len(keys)):
          if key_segments[j] != segments[i] or segments[i] == 0:
            continue
          r_j, r_i = (-1, 0) if j < m else (ranks[j - m], ranks[i])  # Memory: earlier.
          if r_j < r_i or (not strict and r_j == r_i):
            seen.append(j)
        q = np.einsum('d,dnh->nh', x[a], w['q'])
        scores = np.zeros((q.shape[0], len(seen)))
        for t, j in enumerate(seen):
          k = np.einsum('d,dnh->nh', keys[j], w['k'])
          r = np.einsum('d,dnh->nh', _position(m + i - j, d), w['r'])
          scores[:, t] = (
            ((q + w['r_w_bias']) * k).sum(-1)
            + ((q + w['r_r_bias']) * r).sum(-1)
            + ((q + w['r_s_bias']) * w['seg_embed'][0]).sum(-1)  # One token type: "same".
          ) / math.sqrt(q.shape[1])
        if seen:
          probs = np.exp(scores - scores.max(-1, keepdims=True))
          probs /= probs.sum(-1, keepdims=True)
          v = np.einsum('kd,dnh->knh', keys[seen], w['v'])
          out[a] = np.einsum('nk,knh,dnh->d', probs, v, w['o'])
      x = _layer_norm(x + out, w['attention_norm'])
      mlp = w['mlp']
      inner = _gelu_tanh(x @ mlp['wi']['kernel'] + mlp['wi']['bias'])
      return _layer_norm(x + inner @ mlp['wo']['kernel'] + mlp['wo']['bias'], w['mlp_norm'])

    h, g = attend(h, range(len(tokens)), strict=False), attend(g, targets, strict=True)
  return g @ emb.T + p['lm_bias'], layer_inputs


def _reference_loss(p, batch):
  chunks = batch['target_positions'].shape[1]
  chunk = batch['inputs'].shape[1] // chunks
  nll = weight = 0.0
  all_logits = []  # Per row, per chunk.
  for b in range(batch['inputs'].shape[0]):
    mem = mem_segments = None
    for c in range(chunks):
      part = {
        k: batch[k][b, c * chunk : (c + 1) * chunk] for k in ('inputs', 'segment_ids', 'ranks')
      }
      targets = batch['target_positions'][b, c]
      logits, mem_next = _reference_chunk(
        p, part['inputs'], part['segment_ids'], part['ranks'], targets, mem, mem_segments
      )
      z = logits - logits.max(-1, keepdims=True)
      logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
      gold = part['inputs'][targets]
      nll -= (logp[np.arange(len(targets)), gold] * batch['target_weights'][b, c]).sum()
      weight += batch['target_weights'][b, c].sum()
      mem, mem_segments = mem_next, part['segment_ids']
      all_logits.append(logits)
  return nll / weight, weight, all_logits


def test_loss_matches_the_hand_computed_reference_under_jit():
  cfg = xlnet.XLNetConfig(vocab_size=40, num_layers=2, d_model=8, num_heads=2, mlp_dim=16)
  model = permutation.build_model(cfg)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *model.init_inputs(12))['params']
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda x: rng.normal(size=x.shape).astype(np.float32) * 0.3, nn.unbox(boxed)
  )
  # Document 2 (positions 5..17) crosses the chunk boundary at 12: chunk 2 reads its start
  # from the memory. K = 3 predicts 1 + 2 tokens in chunk 1, 1 + 0 in chunk 2.
  body = [31, 4, 5, 6, 32, 31, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 32, 31, 18, 19, 32, 0, 0]
  tokens = np.array([body], np.int32)
  segments = np.array([[1] * 5 + [2] * 13 + [3] * 4 + [0] * 2])
  rows = {
    'tokens': tokens,
    'segment_ids': segments,
    'positions': np.zeros_like(tokens),
    'epoch': np.zeros(1, np.int64),
    'example_id': np.array([3]),
  }
  batch = permutation.make_preprocess(_objective(fraction=3), TOKENIZER, seed=0)(rows)
  np.testing.assert_array_equal(batch['target_weights'].sum(-1), [[3, 1]])
  loss, metrics = jax.jit(lambda p, b: permutation.loss_fn(p, b, None, model=model))(params, batch)
  params64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  expected, weight, expected_logits = _reference_loss(params64, batch)
  # Tight: a wrong sign of the relative distances moves this loss by 2e-5 only.
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert float(metrics['loss'][1]) == weight
  # The second chunk's logits, through the memory of the first (1e-3 off for that sign).
  apply = jax.jit(model.apply)
  chunk = lambda name, c: batch[name][:, c * 12 : (c + 1) * 12]  # noqa: E731
  args = lambda c: [chunk(k, c) for k in ('inputs', 'segment_ids', 'ranks')]  # noqa: E731
  _, mems = apply({'params': params}, *args(0), batch['target_positions'][:, 0])
  logits, _ = apply(
    {'params': params}, *args(1), batch['target_positions'][:, 1], mems=mems,
    mem_segment_ids=chunk('segment_ids', 0),
  )  # fmt: skip
  np.testing.assert_allclose(logits[0], expected_logits[1], atol=1e-5)
  # Without dropout (its compile is slow on a CPU); the training test runs it.
  grads = jax.jit(jax.grad(lambda p: permutation.loss_fn(p, batch, None, model=model)[0]))(params)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(grads))
  assert np.abs(grads['xlnet']['mask_emb']).sum() > 0  # The query stream is trained.
