"""Perplexity of a causal LM on a text, in sliding windows.

The whole text is framed as one document the way objectives/clm.py frames a segment,
BOS text EOS, and every token after the BOS is predicted (the text's tokens and the
EOS): `tokens` is len(ids) - 1. Long texts are scored in sliding windows (the Hugging
Face perplexity recipe): the first window scores all its targets; each later window ends
`stride` targets further on, takes as much left context as `context_len` allows, and
scores only its new targets, so every target is scored exactly once with at least
`context_len - stride` tokens of context (stride == context_len: disjoint chunks).
"""

import numpy as np

from evaluation import lm_scoring


def frame_document(tokenizer, text: str) -> np.ndarray:
  """BOS text EOS, as objectives/clm.py frames a segment."""
  ids = np.asarray(tokenizer.encode(text), np.int32)
  return np.concatenate([[tokenizer.bos_id], ids, [tokenizer.eos_id]]).astype(np.int32)


def windows(n: int, context_len: int, stride: int) -> list[tuple[int, int, int]]:
  """Sliding windows over a sequence of n ids: (begin, end, first_scored).

  A window reads inputs ids[begin:end - 1] (at most context_len) and scores the targets
  ids[first_scored:end]; target j is predicted from ids[begin:j]. The first window scores
  all of its targets, each later one the next `stride`, so targets 1..n-1 are each scored
  exactly once, with at least context_len - stride ids of context after the first window.
  """
  if not 0 < stride <= context_len:
    raise ValueError(f'stride={stride} must be in [1, context_len={context_len}].')
  spans = [(0, min(context_len + 1, n), 1)]  # ids[0] (BOS) is never a target.
  while spans[-1][1] < n:
    first = spans[-1][1]
    end = min(first + stride, n)
    spans.append((max(end - 1 - context_len, 0), end, first))
  return spans


def perplexity(
  model, params, tokenizer, text: str, *, context_len: int, stride: int, batch_size: int = 8
) -> dict:
  """Perplexity of `text` as one BOS ... EOS document, in sliding windows.

  Args:
    model, params, tokenizer: a causal LM (see lm_scoring.load_decoder).
    text: the whole text.
    context_len: model inputs per window (at most the model's position table).
    stride: new targets per window after the first; context >= context_len - stride.
    batch_size: windows per jitted call ([batch_size, context_len] blocks).

  Returns:
    {'nll_sum' (nats), 'tokens' (targets scored: len(ids) - 1), 'perplexity',
    'bits_per_token', 'windows'}.
  """
  if context_len > lm_scoring.max_positions(model):
    raise ValueError(
      f'context_len={context_len} > model max positions {lm_scoring.max_positions(model)}.'
    )
  ids = frame_document(tokenizer, text)
  spans = windows(len(ids), context_len, stride)
  log_probs = lm_scoring.score_sequences(
    lm_scoring.make_scorer(model),
    params,
    [ids[b:e] for b, e, _ in spans],
    [f - b for b, _, f in spans],  # First scored target, relative to the window.
    context_len,
    tokenizer.pad_id,
    batch_size,
  )
  nll_sum = -float(np.sum(log_probs))
  tokens = len(ids) - 1
  mean = nll_sum / tokens
  return {
    'nll_sum': nll_sum,
    'tokens': tokens,
    'perplexity': float(np.exp(mean)),
    'bits_per_token': mean / float(np.log(2.0)),
    'windows': len(spans),
  }
