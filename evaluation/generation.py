"""Greedy generation from a causal LM, and matching a generation to candidate answers."""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from evaluation import lm_scoring, task_metrics


def _greedy_step(params, tokens, lengths, *, model):
  """Argmax next token after each row's `lengths` real tokens: [batch] int32."""
  index = jnp.arange(tokens.shape[1])
  segment_ids = (index[None, :] < lengths[:, None]).astype(jnp.int32)
  positions = jnp.broadcast_to(index, tokens.shape)
  logits = model.apply({'params': params}, tokens, segment_ids, positions)  # [b, l, vocab]
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return jnp.argmax(last.astype(jnp.float32), axis=-1).astype(jnp.int32)


def greedy_generate(
  model,
  params,
  tokenizer,
  prompts: Sequence[str],
  max_new_tokens: int,
  *,
  max_len: int = 0,
  batch_size: int = 8,
  stop_at_newline: bool = True,
) -> list[str]:
  """Greedy continuations of BOS + each prompt, cut at EOS and (optionally) a newline.

  No KV cache: each step recomputes the whole row at one fixed padded length, so the step
  compiles once; the cost is max_new_tokens full forward passes per batch. Prompts longer
  than the length minus max_new_tokens lose tokens on the left. (A SentencePiece model
  trained with the default normalization maps newlines to spaces, so there EOS or
  max_new_tokens ends a generation.)
  """
  limit = min(max_len or lm_scoring.max_positions(model), lm_scoring.max_positions(model))
  if max_new_tokens >= limit:
    raise ValueError(f'max_new_tokens={max_new_tokens} leaves no room for a prompt in {limit}.')
  contexts = [
    np.concatenate([[tokenizer.bos_id], tokenizer.encode(p)]).astype(np.int32)[
      -(limit - max_new_tokens) :
    ]
    for p in prompts
  ]
  length = lm_scoring.padded_length(max(len(c) for c in contexts) + max_new_tokens, limit)
  step = jax.jit(functools.partial(_greedy_step, model=model))
  texts = []
  for start in range(0, len(contexts), batch_size):
    chunk = contexts[start : start + batch_size]
    tokens = np.full((batch_size, length), tokenizer.pad_id, np.int32)
    lengths = np.ones(batch_size, np.int32)  # Filler rows: one pad token.
    for i, ids in enumerate(chunk):
      tokens[i, : len(ids)] = ids
      lengths[i] = len(ids)
    first = lengths.copy()
    done = np.zeros(batch_size, bool)
    done[len(chunk) :] = True
    for _ in range(max_new_tokens):
      next_ids = np.asarray(step(params, tokens, lengths))
      live = ~done
      tokens[live, lengths[live]] = next_ids[live]
      lengths[live] += 1
      done |= next_ids == tokenizer.eos_id
      if stop_at_newline:
        done |= [
          ('\n' in _decode(tokenizer, tokens[i, first[i] : lengths[i]])) for i in range(batch_size)
        ]
      if done.all():
        break
    for i in range(len(chunk)):
      texts.append(_decode(tokenizer, tokens[i, first[i] : lengths[i]]))
  if stop_at_newline:
    texts = [t.split('\n')[0] for t in texts]
  return texts


def _decode(tokenizer, ids) -> str:
  ids = list(ids)
  if tokenizer.eos_id in ids:
    ids = ids[: ids.index(tokenizer.eos_id)]
  return tokenizer.decode(ids)


def match_candidate(text: str, candidates: Sequence[str]) -> int:
  """Index of the candidate a generation names (SQuAD-normalized: equal, or its first
  words), else -1."""
  generated = task_metrics.normalize_answer(text)
  for i, cand in enumerate(candidates):
    c = task_metrics.normalize_answer(cand)
    if c and (generated == c or generated.startswith(c + ' ')):
      return i
  return -1
