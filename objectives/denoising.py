"""BART denoising (Lewis et al. 2020): the encoder reads corrupted text, the decoder
writes the original.

BART's five noising functions, each switched by its own key of `config.objective`
and applied in BART's order (sentence permutation, document rotation, then the
token-level noise):

- `permute_sentences` (bool): shuffle the sentences of each segment. The corpus
  carries no sentence markers, so a sentence ends at a token whose piece ends in
  '.', '!' or '?' (read once from `tokenizer.id_to_piece` into a boolean table).
- `rotate_document` (bool): rotate each segment to start at a uniformly drawn token.
- `mask_rate` (> 0 turns it on): token masking exactly as MLM
  (objectives/mlm.py `make_masker`: [MASK] / random / kept).
- `delete_rate`: delete each token with this probability.
- `infill_rate` with `poisson_lambda`: text infilling. Spans with Poisson(λ)
  lengths start at random tokens until about `infill_rate` of the tokens are
  covered; each span becomes one [MASK] and a zero-length span inserts one.

Only ordinary tokens are ever moved, masked or deleted: specials (the BOS / EOS
framing, padding) keep their place. The encoder row holds each segment's
corrupted tokens re-packed contiguously (deletion and infilling shorten it) with
new positions, padded to the packed length; the decoder predicts every token of
each original segment (BOS ... EOS) from inputs shifted right with EOS first, as
BART does. Every draw is a function of (seed, epoch, example id, position).
"""

import numpy as np
from ml_collections import config_dict

from data import host_random
from models import heads
from objectives import mlm
from objectives.shared import seq2seq

FRAMING = ('bos_id', 'eos_id')
# `python -m tools.show` prints the encoder's (corrupted) text beside the decoder's target.
SHOW = 'seq2seq'
# The objective API's eval figures and loss: seq2seq's.
eval_summary = seq2seq.eval_summary
loss_fn = seq2seq.loss_fn

# host_random streams; mlm.make_masker uses 0..2.
_SENTENCE_STREAM, _ROTATE_STREAM, _DELETE_STREAM = 10, 11, 12
_SPAN_START_STREAM, _SPAN_LENGTH_STREAM = 13, 14
_SENTENCE_END = ('.', '!', '?')


def config() -> config_dict.ConfigDict:
  """BART denoising's keys (token masking reads MLM's mask_rate); all off but masking."""
  c = config_dict.ConfigDict()
  c.infill_rate = 0.0  # Text infilling: fraction of tokens inside spans; 0: off.
  c.poisson_lambda = 3.0  # Text infilling: span lengths ~ Poisson(lambda).
  c.delete_rate = 0.0  # Token deletion: probability per token; 0: off.
  c.permute_sentences = False  # Shuffle the sentences ('.', '!', '?' end one).
  c.rotate_document = False  # Rotate each segment to start at a random token.
  return c


def build_model(model_cfg):
  """The encoder-decoder with its output tied to the shared embedding (or untied)."""
  return heads.Seq2SeqLM(model_cfg)


def sentence_end_table(tokenizer) -> np.ndarray:
  """[vocab] True for ordinary tokens whose piece ends a sentence ('.', '!', '?')."""
  pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
  table = np.array([p.endswith(_SENTENCE_END) for p in pieces], bool)
  table[np.asarray(tokenizer.special_ids)] = False
  return table


def _segment_layout(movable: np.ndarray, segment_ids: np.ndarray):
  """Where each position's segment starts and each movable token's rank in it.

  Returns (start [batch, length]: index of the segment's first position,
  rank: movable tokens before this one in its segment, count: movable tokens in
  the segment, before: movable tokens before this one in the row).
  """
  batch, length = segment_ids.shape
  index = np.broadcast_to(np.arange(length), segment_ids.shape)
  new = np.ones(segment_ids.shape, bool)
  new[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
  start = np.maximum.accumulate(np.where(new, index, 0), axis=1)  # [batch, length]
  before = np.cumsum(movable, axis=1) - movable  # Exclusive count along the row.
  rank = before - np.take_along_axis(before, start, axis=1)
  group = np.arange(batch)[:, None] * length + start  # One id per (row, segment).
  count = np.bincount(group[movable], minlength=batch * length)[group]
  return start, rank, count, before


def _reorder(tokens: np.ndarray, movable: np.ndarray, segment_ids, key: np.ndarray):
  """Rearranges the movable tokens of each segment by ascending `key` (ties keep order);
  the other positions stay. Both orders group the movable tokens by (row, segment)
  with the same counts, so sorted sources fill the natural slots segment by segment."""
  rows, cols = np.nonzero(movable)
  order = np.lexsort((cols, key[rows, cols], segment_ids[rows, cols], rows))
  out = tokens.copy()
  out[rows, cols] = tokens[rows[order], cols[order]]
  return out


def _poisson_table(lam: float) -> np.ndarray:
  """CDF of Poisson(lam) up to a tail below 1e-12 (inverse-CDF sampling)."""
  k, pmf, cdf = 0, np.exp(-lam), []
  while not cdf or 1.0 - cdf[-1] > 1e-12:
    cdf.append((cdf[-1] if cdf else 0.0) + pmf)
    k += 1
    pmf *= lam / k
  return np.array(cdf)


def span_start_rate(infill_rate: float, lam: float) -> float:
  """Per-token span start probability p so that p * P(free) * lam = infill_rate.

  A drawn start is kept only if no earlier start's span covers it, so that kept
  spans never overlap and keep exact Poisson lengths; a position is free with
  probability prod_j (1 - p P(K > j)) away from segment edges.
  """
  cdf = _poisson_table(lam)
  tail = 1.0 - cdf[1:]  # P(K > j) for j = 1, 2, ...
  covered = lambda p: p * np.prod(1.0 - p * tail) * lam  # noqa: E731
  grid = np.linspace(0.0, 1.0, 1001)  # covered(p) rises, then falls as starts block starts.
  reached = np.flatnonzero([covered(p) >= infill_rate for p in grid])
  if not len(reached):
    best = max(covered(p) for p in grid)
    raise ValueError(
      f'objective.infill_rate={infill_rate} cannot be reached with poisson_lambda={lam} '
      f'(at most {best:.2f} of the tokens); lower it or raise the lambda.'
    )
  lo, hi = grid[reached[0] - 1], grid[reached[0]]
  for _ in range(50):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if covered(mid) < infill_rate else (lo, mid)
  return (lo + hi) / 2


def infill_spans(draw, movable, rank, count, before, start_rate: float, cdf: np.ndarray):
  """Text infilling's spans, in row-rank coordinates (movable tokens before in the row).

  Returns (starts [batch, length]: a kept span begins at this token, lengths: its
  Poisson length (clipped at the segment's end), covered: tokens inside a span).
  """
  lengths = np.searchsorted(cdf, draw(_SPAN_LENGTH_STREAM), side='right')  # [batch, length]
  lengths = np.minimum(lengths, count - rank)  # A span stops at its segment's end.
  drawn = movable & (draw(_SPAN_START_STREAM) < start_rate)
  end = np.where(drawn, before + lengths, -1)  # Row rank one past each span.
  blocked = np.zeros_like(end)
  blocked[:, 1:] = np.maximum.accumulate(end, axis=1)[:, :-1]  # Over the earlier starts.
  starts = drawn & (before >= blocked)
  reach = np.maximum.accumulate(np.where(starts, before + lengths, -1), axis=1)
  covered = movable & (before < reach)
  return starts, np.where(starts, lengths, 0), covered


def make_noiser(objective_cfg, tokenizer, seed: int):
  """Returns `noise(batch) -> dict` with the encoder row: `inputs`, `segment_ids`,
  `positions` [batch, length], and `permuted` (the tokens after the reordering
  noise, before the token-level noise), for tests and inspection."""
  mask_rate = objective_cfg.mask_rate
  delete_rate, infill_rate = float(objective_cfg.delete_rate), float(objective_cfg.infill_rate)
  lam = float(objective_cfg.poisson_lambda)
  permute, rotate = bool(objective_cfg.permute_sentences), bool(objective_cfg.rotate_document)
  for name, rate in (('delete_rate', delete_rate), ('infill_rate', infill_rate)):
    if not 0.0 <= rate < 1.0:
      raise ValueError(f'objective.{name}={rate} must be in [0, 1).')
  if lam <= 0:
    raise ValueError(f'objective.poisson_lambda={lam} must be > 0.')
  masker = mlm.make_masker(objective_cfg, tokenizer, seed) if mask_rate > 0 else None
  ends = sentence_end_table(tokenizer) if permute else None
  start_rate = span_start_rate(infill_rate, lam) if infill_rate > 0 else 0.0
  cdf = _poisson_table(lam)
  special_ids = np.asarray(tokenizer.special_ids)

  def noise(batch: dict) -> dict:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    batch_size, length = tokens.shape
    draw = lambda stream: host_random.uniform(  # noqa: E731
      seed, batch['epoch'], batch['example_id'], length, stream
    )
    movable = (segment_ids > 0) & ~np.isin(tokens, special_ids)
    start, rank, count, before = _segment_layout(movable, segment_ids)
    rows = np.arange(batch_size)[:, None]
    if permute:
      # A sentence starts at a segment's first movable token or after a sentence end;
      # its sort key is the draw at its first token, so its tokens move together.
      after_end = np.zeros_like(movable)
      last = np.maximum.accumulate(np.where(movable, np.arange(length), -1), axis=1)
      prev = np.zeros_like(last)
      prev[:, 1:] = last[:, :-1]  # The previous movable token of the row (-1: none).
      after_end = (prev >= start) & ends[tokens[rows, np.maximum(prev, 0)]]
      first = movable & ((rank == 0) | after_end)
      head = np.maximum.accumulate(np.where(first, np.arange(length), 0), axis=1)
      tokens = _reorder(tokens, movable, segment_ids, draw(_SENTENCE_STREAM)[rows, head])
    if rotate:
      # Every segment starts at its token of rank `offset`: key (rank - offset) mod count.
      offset = np.floor(draw(_ROTATE_STREAM)[rows, start] * count).astype(np.int64)
      tokens = _reorder(tokens, movable, segment_ids, (rank - offset) % np.maximum(count, 1))
    permuted = tokens
    if masker is not None:
      tokens, _ = masker(dict(batch, tokens=tokens))
    keep = np.ones_like(movable)  # Emit this position's (possibly masked) token.
    insert = np.zeros_like(movable)  # Emit a [MASK] before it (a zero-length span).
    if infill_rate > 0:
      starts, lengths, covered = infill_spans(draw, movable, rank, count, before, start_rate, cdf)
      tokens = np.where(starts & (lengths > 0), tokenizer.mask_id, tokens)
      keep &= ~covered | (starts & (lengths > 0))
      insert = starts & (lengths == 0)
    else:
      covered = np.zeros_like(movable)
    if delete_rate > 0:
      keep &= ~(movable & ~covered & (draw(_DELETE_STREAM) < delete_rate))
    keep &= segment_ids > 0
    # Re-pack: each position emits `insert` then `keep` tokens, in row order.
    emitted = insert.astype(np.int64) + keep
    out_end = np.cumsum(emitted, axis=1)  # [batch, length]
    if out_end[:, -1].max(initial=0) > length:
      raise ValueError(
        f'Text infilling inserted more [MASK]s than it removed tokens in a row of {length}; '
        f'raise objective.infill_rate (now {infill_rate}) or poisson_lambda (now {lam}).'
      )
    out_start = out_end - emitted
    seg_out_start = np.take_along_axis(out_start, start, axis=1)
    seg_position = np.take_along_axis(batch['positions'], start, axis=1)
    inputs = np.full((batch_size, length), tokenizer.pad_id, np.int32)
    enc_segments = np.zeros((batch_size, length), np.int32)
    enc_positions = np.zeros((batch_size, length), np.int32)
    for where, slot, value in (
      (insert, out_start, np.full_like(tokens, tokenizer.mask_id)),
      (keep, out_end - 1, tokens),
    ):
      r, c = np.nonzero(where)
      inputs[r, slot[r, c]] = value[r, c]
      enc_segments[r, slot[r, c]] = segment_ids[r, c]
      enc_positions[r, slot[r, c]] = seg_position[r, c] + slot[r, c] - seg_out_start[r, c]
    return dict(inputs=inputs, segment_ids=enc_segments, positions=enc_positions, permuted=permuted)

  return noise


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch`: noised encoder rows, original decoder targets."""
  noise = make_noiser(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    encoder = noise(batch)
    return seq2seq.model_batch(
      encoder,
      batch,
      inputs=encoder['inputs'],
      targets=batch['tokens'],
      weights=batch['segment_ids'] > 0,
      start_id=tokenizer.eos_id,
    )

  return preprocess
