"""Sentence embeddings without fine-tuning: pooled final states, cosine similarity, and
the STS-B evaluation (Spearman between cosine and gold scores), as SBERT reports it.

`embed(encode, tokenizer, sentences)` frames each sentence as [CLS] ... [SEP],
batches sentences of similar length (padded to a multiple of `length_step`, so
few shapes compile), runs `encode(tokens, segment_ids) -> [batch, length, embed]`
and pools: 'mean' over the real tokens (sentence-transformers' default) or 'cls'
(the first token's state); embeddings are L2-normalized, so a dot product is the
cosine. bench/minilm_sts.py uses it on all-MiniLM-L6-v2 against
sentence-transformers.
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from evaluation import task_metrics

POOLING = ('mean', 'cls')


def pool(hidden, segment_ids, mode: str = 'mean'):
  """[batch, embed] L2-normalized sentence embeddings from [batch, length, embed] states.

  Args:
    hidden: final states.
    segment_ids: [batch, length], 0 on padding (one sentence per row).
    mode: 'mean' over real tokens, or 'cls' (position 0).
  """
  if mode not in POOLING:
    raise ValueError(f'pooling={mode!r} must be one of {POOLING}.')
  hidden = hidden.astype(jnp.float32)
  if mode == 'cls':
    pooled = hidden[:, 0]
  else:
    mask = (segment_ids > 0).astype(jnp.float32)[..., None]  # [batch, length, 1]
    pooled = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.maximum(norm, 1e-12)


def embed(
  encode: Callable,
  tokenizer,
  sentences: Sequence[str],
  *,
  max_tokens: int = 256,
  batch_size: int = 64,
  length_step: int = 16,
) -> np.ndarray:
  """[len(sentences), embed] embeddings in input order; `encode(tokens, segment_ids)`
  returns pooled embeddings (e.g. a jitted `pool(model(...))`)."""
  rows = [
    [tokenizer.cls_id, *tokenizer.encode(s)[: max_tokens - 2], tokenizer.sep_id] for s in sentences
  ]
  order = np.argsort([len(r) for r in rows], kind='stable')
  out = None
  for start in range(0, len(rows), batch_size):
    index = order[start : start + batch_size]
    length = -(-max(len(rows[i]) for i in index) // length_step) * length_step
    tokens = np.full((batch_size, length), tokenizer.pad_id, np.int32)
    segment_ids = np.zeros((batch_size, length), np.int32)
    for j, i in enumerate(index):
      tokens[j, : len(rows[i])] = rows[i]
      segment_ids[j, : len(rows[i])] = 1
    pooled = np.asarray(encode(tokens, segment_ids))[: len(index)]
    if out is None:
      out = np.zeros((len(rows), pooled.shape[-1]), np.float32)
    out[index] = pooled
  return out


def sts_spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> float:
  """Spearman (x100, as the papers print it) between the pairs' cosines and gold scores."""
  return 100 * task_metrics.spearman((first * second).sum(-1), np.asarray(gold))
