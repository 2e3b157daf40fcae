"""XLNet's permutation language modelling (Yang et al. 2019), with partial prediction.

Host side, vectorized over the batch. A packed row is cut into `num_chunks`
equal chunks (default 2), and each document's part inside one chunk, a *piece*,
gets its own factorization order: an argsort of per-position uniforms from
data/host_random (a pure function of (seed, epoch, example id), so every
epoch permutes afresh and a restored run permutes as the uninterrupted one).
Framing tokens, other special tokens and padding take no part in an order and
are never predicted. Partial prediction (Section 2.3): a piece of n tokens
predicts the last floor(n / K) of its order, K = `num_predict_fraction`
(default 6; the paper uses 6 or 7, and XLNet-Base's 85 of 512 tokens is about 1/6).
A piece shorter than K predicts nothing. The model gets `ranks`: 0 for the context,
1.. for the predicted tokens in their order (models/xlnet.py `attention_masks`).
This is the paper's rule: the predicted tokens are a uniform sample in a uniform
order. The released code instead picks its 85 targets as short spans
(`_sample_mask`) before permuting them; not done here.

Why per piece and not per document: the chunks are read one after another with
the earlier chunk as memory (Transformer-XL's recurrence inside a row), so a
document crossing a chunk boundary is factorized as its first piece in a random
order, then its second piece in a random order that sees all of the first (as the
released code sees its memory; its orders are also drawn per window of
`perm_size` = half a sequence, `_local_perm`). Per piece also bounds the
predictions of a chunk by floor(chunk / K) (the floors of its pieces sum to no
more), a static size for the query stream's `target_positions` [batch, chunks,
predictions] (with `target_weights`; unused slots point at position 0 and weigh 0).

`inputs` are the tokens themselves (the query stream, not the input, hides a
predicted token), `targets` the tokens and `weights` 1 at the predicted positions:
`python -m tools.show` marks the predictions as <kept> tokens.

Jitted side: the chunks run in order, each with the previous chunk's layer states
as memory (gradient stopped, as in Transformer-XL). The loss is the mean
cross-entropy over the predictions of all chunks: every sampled target counts, the
first chunk's predicted without memory, as the start of any document is.
"""

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from data import host_random
from models import xlnet
from objectives.shared import metrics, token_lm

# XLNet ends a segment with <sep> <cls>; here segments are framed [CLS] tokens [SEP] like
# BERT's. Framing tokens are context only (rank 0, seen by every token of the document).
FRAMING = ('cls_id', 'sep_id')
# How `python -m tools.show` renders a row: predicted positions marked (as kept tokens).
SHOW = 'masked'
# The objective API's eval figures: token_lm's.
eval_summary = token_lm.eval_summary


def config() -> config_dict.ConfigDict:
  """XLNet permutation LM's keys."""
  c = config_dict.ConfigDict()
  c.num_predict_fraction = 6  # K: predict 1/K of each piece (the last of the factorization order).
  c.num_chunks = 2  # Pieces per row, the later reading the earlier as memory.
  return c


def build_model(model_cfg):
  """The model this objective trains: XLNet with its tied LM output on the query stream."""
  return xlnet.XLNetLM(model_cfg)


def sample_ranks(batch: dict, special_ids, seed: int, fraction: int, num_chunks: int):
  """Factorization ranks of packed rows (see the module docstring).

  Args:
    batch: packed rows: tokens, segment_ids [batch, length], epoch, example_id [batch].
    special_ids: ids never predicted (framing, padding, ...).
    seed: the run's seed.
    fraction: K; a piece of n tokens predicts the last floor(n / K) of its order.
    num_chunks: chunks per row; orders are sampled per (chunk, document) piece.

  Returns:
    (ranks, order): int32 [batch, length]. ranks: 0 for context, 1..floor(n / K) for
    the predicted tokens of a piece in their order. order: each ordinary token's
    place in its piece's full order (0 first), -1 for special tokens and padding.
  """
  tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
  size, length = tokens.shape
  u = host_random.uniform(seed, batch['epoch'], batch['example_id'], length, stream=0)
  chunk = np.arange(length) // (length // num_chunks)  # [length]
  ordinary = (segment_ids > 0) & ~np.isin(tokens, special_ids)
  # One id per (chunk, document) piece; -1 for what is not ordered.
  piece = np.where(ordinary, chunk[None, :] * (length + 1) + segment_ids, -1).astype(np.int64)
  by_piece = np.lexsort((u, piece), axis=-1)  # [batch, length]: pieces in turn, each by u.
  rows = np.arange(size)[:, None]
  sorted_piece = piece[rows, by_piece]
  index = np.broadcast_to(np.arange(length), (size, length))
  first = np.ones((size, length), bool)
  first[:, 1:] = sorted_piece[:, 1:] != sorted_piece[:, :-1]
  last = np.ones((size, length), bool)
  last[:, :-1] = first[:, 1:]
  start = np.maximum.accumulate(np.where(first, index, 0), axis=1)
  end = np.minimum.accumulate(np.where(last, index, length)[:, ::-1], axis=1)[:, ::-1]
  place, n = index - start, end - start + 1  # Place in the piece's order, piece size.
  predicted = n // fraction
  context = n - predicted
  valid = sorted_piece >= 0
  sorted_ranks = np.where(valid & (place >= context), place - context + 1, 0)
  ranks, order = np.zeros((size, length), np.int32), np.full((size, length), -1, np.int32)
  ranks[rows, by_piece] = sorted_ranks
  order[rows, by_piece] = np.where(valid, place, -1)
  return ranks, order


def target_slots(predicted: np.ndarray, num_chunks: int, fraction: int):
  """Positions of the predictions of each chunk, in position order, padded with 0.

  Args:
    predicted: [batch, length] bool.

  Returns:
    (target_positions int32, target_weights float32), [batch, chunks, length // chunks // K].
  """
  size, length = predicted.shape
  per_chunk = predicted.reshape(size, num_chunks, length // num_chunks)
  slots = length // num_chunks // fraction
  counts = per_chunk.sum(-1)
  if counts.max(initial=0) > slots:  # The floors of a chunk's pieces cannot exceed its own.
    raise AssertionError(f'{counts.max()} predictions in a chunk with {slots} slots.')
  first = np.argsort(~per_chunk, axis=-1, kind='stable')[..., :slots]
  weights = np.take_along_axis(per_chunk, first, axis=-1)
  return np.where(weights, first, 0).astype(np.int32), weights.astype(np.float32)


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` with XLNet's ranks and prediction slots."""
  fraction = int(objective_cfg.num_predict_fraction)
  num_chunks = int(objective_cfg.num_chunks)
  if fraction < 2:
    raise ValueError(f'objective.num_predict_fraction={fraction} must be >= 2 (K of 1/K).')
  if num_chunks < 1:
    raise ValueError(f'objective.num_chunks={num_chunks} must be >= 1.')
  special_ids = np.asarray(tokenizer.special_ids)

  def preprocess(batch: dict) -> dict:
    length = batch['tokens'].shape[1]
    if length % num_chunks or length // num_chunks < fraction:
      raise ValueError(
        f'seq_len={length} must split into objective.num_chunks={num_chunks} equal chunks'
        f' of at least objective.num_predict_fraction={fraction} tokens.'
      )
    ranks, _ = sample_ranks(batch, special_ids, seed, fraction, num_chunks)
    predicted = ranks > 0
    tokens = batch['tokens']
    out = token_lm.model_batch(batch, inputs=tokens, targets=tokens, weights=predicted)
    target_positions, target_weights = target_slots(predicted, num_chunks, fraction)
    out.update(ranks=ranks, target_positions=target_positions, target_weights=target_weights)
    return out

  return preprocess


def loss_fn(params, batch, rng, *, model):
  """Mean cross-entropy over every chunk's predictions; `rng=None` means evaluation.

  The chunks run in order, each with the previous one's states as memory.
  """
  num_chunks = batch['target_positions'].shape[1]
  length = batch['inputs'].shape[1] // num_chunks
  # [batch, chunks, chunk length] views of the per-position arrays.
  chunked = {
    name: batch[name].reshape(batch[name].shape[0], num_chunks, length)
    for name in ('inputs', 'segment_ids', 'ranks', 'targets')
  }
  mems = mem_segment_ids = None
  total = None
  for c in range(num_chunks):
    inputs, segment_ids, ranks, targets = (chunked[name][:, c] for name in chunked)
    positions = batch['target_positions'][:, c]  # [batch, predictions]
    logits, new_mems = model.apply(
      {'params': params},
      inputs,
      segment_ids,
      ranks,
      positions,
      mems=mems,
      mem_segment_ids=mem_segment_ids,
      deterministic=rng is None,
      rngs=None if rng is None else {'dropout': jax.random.fold_in(rng, c)},
    )
    targets = jnp.take_along_axis(targets, positions, axis=1)
    _, chunk_metrics = metrics.token_cross_entropy(logits, targets, batch['target_weights'][:, c])
    total = chunk_metrics if total is None else metrics.add(total, chunk_metrics)
    mems, mem_segment_ids = new_mems, segment_ids
  loss_sum, weight = total['loss']
  return loss_sum / jnp.where(weight > 0, weight, 1.0), total
