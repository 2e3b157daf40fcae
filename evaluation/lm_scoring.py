"""Causal LMs for evaluation: loading one, and scoring rows of ids with it.

`load_decoder` reads a causal LM (`heads.CausalLM`) and its tokenizer from a train.py
run directory (its newest checkpoint) or a converted directory (`python -m
models.convert`). `make_scorer` jits one function that sums weighted target
log-probabilities per row; `score_sequences` feeds it fixed-shape blocks, so each
length compiles once. Perplexity (perplexity.py), few-shot ranking (fewshot.py) and
generation (generation.py) build on these.
"""

import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import tokenizers
from models import heads
from models.convert import converted
from training import model_setup, pretrained


def _converted_tokenizer(path: str, files: Sequence[str]):
  """The first tokenizer file of a converted checkpoint that data/tokenizers.py can read."""
  for name in files:
    file = name if os.path.isabs(name) else os.path.join(path, name)
    if os.path.isfile(file) and (file.endswith('.model') or file.endswith('.txt')):
      if not file.endswith('merges.txt'):
        return tokenizers.load_tokenizer(file)
  raise FileNotFoundError(
    f'{path}: none of its tokenizer files {list(files)} is a SentencePiece .model or a '
    'WordPiece vocab.txt (byte-level BPE is not supported here); pass tokenizer_path.'
  )


def load_decoder(path: str, tokenizer_path: str | None = None):
  """A causal LM and its tokenizer from a train.py run or a converted directory.

  Args:
    path: a train.py run directory (newest checkpoint) or a converted directory.
    tokenizer_path: a tokenizer file to use instead of the checkpoint's own.

  Returns:
    (model, params, tokenizer): `heads.CausalLM`, its params, a data/tokenizers Tokenizer.
  """
  if model_setup.is_run(path):
    c = pretrained.load_run(path, 'gpt2')
    tokenizer = tokenizers.load_tokenizer(tokenizer_path or c.tokenizer_files[0])
  else:
    c = converted.load(path)
    if tokenizer_path:
      tokenizer = tokenizers.load_tokenizer(tokenizer_path)
    else:
      tokenizer = _converted_tokenizer(path, c.tokenizer_files)
  if 'causal_lm' not in c.heads:
    raise ValueError(f'{path}: a {c.family} checkpoint without a causal LM (heads: {c.heads}).')
  model = heads.CausalLM(c.config)
  return model, converted.head_params(c, 'causal_lm'), tokenizer


def max_positions(model) -> int:
  return model.cfg.max_positions


def padded_length(n: int, limit: int) -> int:
  """The smallest power of two >= n (at least 32), capped at `limit`: few shapes compile."""
  return min(max(32, 1 << max(n - 1, 0).bit_length()), limit)


def row_log_probs(params, inputs, segment_ids, positions, targets, weights, *, model):
  """Weighted sum over each row of log p(target | inputs so far): [batch] float32."""
  logits = model.apply({'params': params}, inputs, segment_ids, positions)  # [b, l, vocab]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [b, l]
  return jnp.sum(jnp.where(weights > 0, picked * weights, 0.0), axis=-1)


def make_scorer(model) -> Callable:
  """A jitted `score(params, rows) -> [batch]` of weighted target log-probabilities.

  `rows` holds [batch, length] arrays inputs, segment_ids (1 real, 0 padding), positions,
  targets and weights; one shape compiles once.
  """
  fn = jax.jit(functools.partial(row_log_probs, model=model))

  def score(params, rows: dict) -> np.ndarray:
    names = ('inputs', 'segment_ids', 'positions', 'targets', 'weights')
    return np.asarray(fn(params, *(rows[n] for n in names)), np.float64)

  return score


def rows(sequences: Sequence[np.ndarray], first_scored: Sequence[int], length: int, pad: int):
  """Next-token rows [len(sequences), length]: a sequence of up to length + 1 ids is read as
  inputs ids[:-1] and targets ids[1:]; target ids[j] counts when j >= its first_scored."""
  n = len(sequences)
  inputs = np.full((n, length), pad, np.int32)
  targets = np.full((n, length), pad, np.int32)
  weights = np.zeros((n, length), np.float32)
  segment_ids = np.zeros((n, length), np.int32)
  for i, (ids, first) in enumerate(zip(sequences, first_scored, strict=True)):
    if len(ids) > length + 1:
      raise ValueError(f'A sequence of {len(ids)} ids does not fit rows of {length} inputs.')
    m = max(len(ids) - 1, 0)  # Inputs (and targets) of this row.
    inputs[i, :m], targets[i, :m] = ids[:m], ids[1 : m + 1]
    segment_ids[i, :m] = 1
    weights[i, max(first - 1, 0) : m] = 1.0  # Target ids[j] sits at row position j - 1.
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), (n, length))
  return dict(
    inputs=inputs, segment_ids=segment_ids, positions=positions, targets=targets, weights=weights
  )


def score_sequences(score, params, sequences, first_scored, length, pad, batch_size):
  """[len(sequences)] weighted log-probs, in fixed [batch_size, length] blocks."""
  out = []
  for start in range(0, len(sequences), batch_size):
    chunk = list(sequences[start : start + batch_size])
    firsts = list(first_scored[start : start + batch_size])
    real = len(chunk)
    # Pad the last block with empty rows (zero weight) so its shape matches the others.
    chunk += [np.zeros(0, np.int32)] * (batch_size - real)
    firsts += [0] * (batch_size - real)
    out.append(score(params, rows(chunk, firsts, length, pad))[:real])
  return np.concatenate(out) if out else np.zeros(0)
