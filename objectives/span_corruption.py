"""T5 span corruption (Raffel et al. 2020, section 3.1.4): drop spans, predict them.

Each packed segment (BOS body EOS, as the loader frames it) is corrupted on its
own, as T5's `random_spans_noise_mask` corrupts one example: of the L body
tokens, n = round(L * noise_density) (clamped to [1, L - 1]) are noise, in
s = round(n / mean_noise_span_length) (at least 1) spans; the noise and the
non-noise tokens are each cut into s non-empty runs by a uniformly random
composition, and interleaved non-noise first, so every segment ends in noise.
The encoder reads the non-noise tokens with one sentinel per noise span and
EOS (no BOS, as T5); the decoder writes each sentinel followed by its span, then
EOS. Spans never cross a segment; framing and padding are never noise.

Sentinels. T5 numbers them from the top of the vocabulary down (extra_id_0 =
vocab_size - 1 of a vocabulary extended by 100 extra ids). The tokenizer is not
changed here, so the sentinels take real pieces: sentinel k is the k-th highest
NON-special id (vocab_size - 1 - k for the SentencePiece models this repository
trains, whose specials are 0..6), never a special id. Those pieces, when they
occur in text, are read as UNK, which keeps encoder and decoder unambiguous;
`num_sentinels = 0` takes only as many as the longest segment can need (7 for
seq_len 128) to lose the least text. Dedicated `<extra_id_k>` pieces in the
tokenizer would lose none (a follow-up in data/tokenizers.py).

Lengths. `packed_length` is T5's `random_spans_helper` arithmetic: the raw row
length whose corruption as one segment fills `seq_len` encoder tokens exactly.
Rows holding several documents round per segment, so they can need a token or
two more (at most 2 for seq_len 128, 6 for 512, e.g. 13 documents of 9 tokens);
such a row's longest segment takes that many more noise tokens (its span count
unchanged), so the encoder never exceeds `seq_len` and nothing is clipped. The
decoder length `decoder_length` is the worst case over every way a row can be split
into segments, so no target is ever cut either.
"""

import functools

import numpy as np
from ml_collections import config_dict

from data import host_random
from models import heads
from objectives.shared import seq2seq

FRAMING = ('bos_id', 'eos_id')
# `python -m tools.show` prints the encoder's (corrupted) text beside the decoder's target.
SHOW = 'seq2seq'
# The objective API's eval figures and loss: seq2seq's.
eval_summary = seq2seq.eval_summary
loss_fn = seq2seq.loss_fn


def config() -> config_dict.ConfigDict:
  """T5 span corruption's keys (Raffel et al. 2020)."""
  c = config_dict.ConfigDict()
  c.noise_density = 0.15  # Fraction of each segment's tokens dropped as noise.
  c.mean_noise_span_length = 3.0  # Noise tokens per span (spans = noise / this).
  c.num_sentinels = 0  # Sentinels (top non-special ids, descending); 0: as needed.
  return c


def build_model(model_cfg):
  """The encoder-decoder (T5's, or any Seq2SeqLM preset)."""
  return heads.Seq2SeqLM(model_cfg)


def noise_counts(body_length, density: float, mean_span: float):
  """(noise tokens, noise spans) of bodies of `body_length` tokens (arrays or ints)."""
  length = np.asarray(body_length, np.int64)
  noise = np.clip(np.round(length * density).astype(np.int64), 1, np.maximum(length - 1, 0))
  spans = np.where(noise > 0, np.maximum(np.round(noise / mean_span).astype(np.int64), 1), 0)
  return noise, spans


def _check(objective_cfg) -> tuple[float, float]:
  density, mean_span = objective_cfg.noise_density, objective_cfg.mean_noise_span_length
  if not 0.0 < density < 1.0:
    raise ValueError(f'objective.noise_density={density} must be in (0, 1).')
  if mean_span < 1.0:
    raise ValueError(f'objective.mean_noise_span_length={mean_span} must be >= 1.')
  return density, mean_span


@functools.lru_cache(maxsize=32)
def _lengths(seq_len: int, density: float, mean_span: float) -> tuple[int, int]:
  """(raw packed length, decoder length) for encoder rows of `seq_len`."""

  def encoder_length(body):  # One segment: body - noise + sentinels + EOS.
    noise, spans = noise_counts(body, density, mean_span)
    return int(body - noise + spans + 1)

  body = seq_len - 1
  while encoder_length(body + 1) <= seq_len:
    body += 1
  raw = body + 2  # BOS and EOS framing.
  # Largest decoder row over all splits of `raw` tokens into framed segments
  # (a segment of body b takes b + 2 raw tokens, gives noise + spans + EOS targets).
  bodies = np.arange(1, raw - 1)
  noise, spans = noise_counts(bodies, density, mean_span)
  cost = noise + spans + 1
  best = np.zeros(raw + 1, np.int64)  # Padding may fill any remainder.
  for used in range(3, raw + 1):
    fits = bodies[: used - 2]
    best[used] = max(best[used - 1], int(np.max(best[used - fits - 2] + cost[: used - 2])))
  # The worst encoder overflow of a row of several documents, which repair moves
  # into the decoder as extra noise tokens.
  enc = np.zeros(raw + 1, np.int64)
  enc_cost = bodies - noise + spans + 1
  for used in range(3, raw + 1):
    fits = bodies[: used - 2]
    enc[used] = max(enc[used - 1], int(np.max(enc[used - fits - 2] + enc_cost[: used - 2])))
  return raw, int(best[raw]) + max(int(enc[raw]) - seq_len, 0)


def packed_length(objective_cfg, seq_len: int) -> int:
  """Raw tokens per packed row so that a one-document row corrupts to `seq_len` exactly."""
  return _lengths(seq_len, *_check(objective_cfg))[0]


def decoder_length(objective_cfg, seq_len: int) -> int:
  """Decoder tokens per row: enough for any mix of documents in a packed row (also the
  decoder length of the FLOP count, objectives/api.decoder_length)."""
  return _lengths(seq_len, *_check(objective_cfg))[1]


def _random_cuts(keys, slot, count, parts, segment):
  """Cut points of a uniformly random composition of `count` into `parts` positive parts.

  Args (flat over candidate slots, grouped by segment): keys: uniform draws;
  slot: index of the slot within its segment; count, parts: per slot, its
  segment's totals; segment: the segment of each slot.
  Returns a bool per slot: a run starts there (slot 0 always; among slots
  1..count-1, the parts - 1 with the smallest keys).
  """
  candidate = (slot >= 1) & (slot < count)
  # One float key sorts by segment, then candidates by key (non-candidates last): exact
  # in float64 and ~3x faster than np.lexsort on the two columns.
  order = np.argsort(segment * 3.0 + np.where(candidate, keys, 2.0))
  first = np.searchsorted(segment[order], segment[order], side='left')
  rank = np.empty_like(slot)
  rank[order] = np.arange(len(order)) - first
  return (slot == 0) | (candidate & (rank < parts - 1))


def sentinel_ids(objective_cfg, tokenizer, seq_len: int) -> np.ndarray:
  """The sentinel ids, in order: the highest ordinary ids, decreasing (as T5's)."""
  density, mean_span = _check(objective_cfg)
  raw_len, _ = _lengths(seq_len, density, mean_span)
  ordinary = np.setdiff1d(np.arange(tokenizer.vocab_size), np.asarray(tokenizer.special_ids))
  # 0: just the sentinels the longest segment needs, so the fewest pieces are taken.
  num_sentinels = objective_cfg.num_sentinels or int(
    noise_counts(raw_len - 2, density, mean_span)[1]
  )
  if num_sentinels > len(ordinary) // 2:
    raise ValueError(
      f'objective.num_sentinels={num_sentinels} would take over half of the '
      f'{len(ordinary)} ordinary ids of the tokenizer.'
    )
  return ordinary[::-1][:num_sentinels].astype(np.int32)


def show_names(objective_cfg, tokenizer, seq_len: int) -> dict[int, str]:
  """How `python -m tools.show` writes the sentinels: <extra_id_0>, <extra_id_1>, ..."""
  return {
    int(i): f'<extra_id_{k}>' for k, i in enumerate(sentinel_ids(objective_cfg, tokenizer, seq_len))
  }


def make_corruptor(objective_cfg, tokenizer, seed: int, seq_len: int):
  """Returns `corrupt(batch) -> dict` of encoder / decoder rows (see `make_preprocess`).

  The dict holds 'inputs', 'segment_ids', 'positions' [batch, seq_len];
  'targets', 'decoder_segment_ids', 'decoder_positions', 'weights' [batch,
  dec_len]; and 'noise' [batch, raw_len], the noise mask over the packed tokens.
  """
  density, mean_span = _check(objective_cfg)
  raw_len, dec_len = _lengths(seq_len, density, mean_span)
  sentinels = sentinel_ids(objective_cfg, tokenizer, seq_len)
  num_sentinels = len(sentinels)
  eos_id = tokenizer.eos_id

  def corrupt(batch: dict) -> dict:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, raw_len]
    rows, length = tokens.shape
    if length != raw_len:
      raise ValueError(f'Packed rows of {length} tokens; expected packed_length = {raw_len}.')
    real = segment_ids > 0
    following = np.zeros_like(segment_ids)
    following[:, :-1] = segment_ids[:, 1:]
    last = real & (following != segment_ids)  # EOS framing.
    body = real & (batch['positions'] > 0) & ~last  # [batch, raw_len]
    tokens = np.where(body & np.isin(tokens, sentinels), tokenizer.unk_id, tokens)

    # Segments, flat in row-major order: g = row * raw_len + segment id.
    flat_body = np.flatnonzero(body)  # [num_body]
    segment = (flat_body // length) * length + segment_ids.reshape(-1)[flat_body]
    ids, first, seg_len = np.unique(segment, return_index=True, return_counts=True)
    seg_of = np.searchsorted(ids, segment)  # Compact segment index per body token.
    slot = np.arange(len(flat_body)) - first[seg_of]
    noise, spans = noise_counts(seg_len, density, mean_span)  # [num_segments]
    # Rows of several documents may overflow the encoder by rounding: give up spans.
    seg_row = ids // length
    enc = np.bincount(seg_row, seg_len - noise + spans + 1, minlength=rows)
    overflow = (enc - seq_len).astype(np.int64)  # [batch]
    if np.any(overflow > 0):
      order = np.lexsort((-seg_len, seg_row))  # The longest segment first per row.
      top = order[np.searchsorted(seg_row[order], np.flatnonzero(overflow > 0))]
      noise[top] += overflow[overflow > 0]
      if np.any(seg_len[top] - noise[top] < spans[top]):
        raise ValueError('Cannot fit a corrupted row into seq_len; lengthen seq_len.')
    if spans.size and spans.max() > num_sentinels:
      raise ValueError(
        f'A segment needs {spans.max()} sentinels; raise objective.num_sentinels '
        f'(now {num_sentinels}).'
      )

    draw = lambda stream: host_random.uniform(  # noqa: E731
      seed, batch['epoch'], batch['example_id'], length, stream
    ).reshape(-1)[flat_body]
    parts = spans[seg_of]
    noise_start = _random_cuts(draw(0), slot, noise[seg_of], parts, seg_of)
    keep_start = _random_cuts(draw(1), slot, seg_len[seg_of] - noise[seg_of], parts, seg_of)
    noise_slot = slot < noise[seg_of]
    keep_slot = slot < seg_len[seg_of] - noise[seg_of]
    # Run lengths, interleaved (kept run k, noise run k) per segment: flat runs tile the
    # concatenated bodies exactly, so each body token's run is a searchsorted away.
    pairs = np.maximum(spans, 1)  # A segment too short for noise is one kept run.
    run_offset = np.cumsum(pairs) - pairs  # First run pair of each segment.
    noise_run = run_offset[seg_of] + _within(noise_start, seg_of, first) - 1
    keep_run = run_offset[seg_of] + _within(keep_start, seg_of, first) - 1
    total = int(pairs.sum())
    runs = np.zeros(2 * total, np.int64)
    runs[0::2] = np.bincount(keep_run[keep_slot], minlength=total)
    runs[1::2] = np.bincount(noise_run[noise_slot], minlength=total)
    run = np.repeat(np.arange(len(runs)), runs)  # The run of each body token.
    is_noise = run % 2 == 1
    starts = np.ones(len(flat_body), bool)
    starts[1:] = run[1:] != run[:-1]
    sentinel = sentinels[np.minimum(run // 2 - run_offset[seg_of], num_sentinels - 1)]

    noise_mask = np.zeros(rows * length, bool)
    noise_mask[flat_body] = is_noise
    span_start = np.zeros(rows * length, bool)
    span_start[flat_body] = is_noise & starts
    sentinel_at = np.zeros(rows * length, np.int32)
    sentinel_at[flat_body] = sentinel
    shape = (rows, length)
    noise_mask, span_start, sentinel_at = (
      a.reshape(shape) for a in (noise_mask, span_start, sentinel_at)
    )

    # Encoder: kept tokens, a sentinel for each span, EOS (no BOS).
    emit = (body & ~noise_mask) | span_start | last
    enc_tokens = np.where(span_start, sentinel_at, tokens)
    encoder = seq2seq.pack_emitted(emit, enc_tokens, segment_ids, seq_len)
    # Decoder: sentinel then token at a span's first token, the token elsewhere in a span.
    count = noise_mask.astype(np.int64) + span_start + last  # [batch, raw_len]
    dest = np.cumsum(count, axis=1) - count
    targets = np.zeros((rows, dec_len), np.int32)
    dec_segments = np.zeros((rows, dec_len), np.int32)
    r = np.broadcast_to(np.arange(rows)[:, None], shape)
    targets[r[span_start], dest[span_start]] = sentinel_at[span_start]
    targets[r[noise_mask], (dest + span_start)[noise_mask]] = tokens[noise_mask]
    targets[r[last], dest[last]] = eos_id
    for mask, offset in ((noise_mask, span_start), (span_start, 0), (last, 0)):
      dec_segments[r[mask], (dest + offset)[mask]] = segment_ids[mask]
    return {
      'inputs': encoder['tokens'],
      'segment_ids': encoder['segment_ids'],
      'positions': encoder['positions'],
      'targets': targets,
      'decoder_segment_ids': dec_segments,
      'decoder_positions': seq2seq.segment_positions(dec_segments),
      'weights': (dec_segments > 0).astype(np.float32),
      'noise': noise_mask,
    }

  return corrupt


def _within(starts: np.ndarray, seg_of: np.ndarray, first: np.ndarray) -> np.ndarray:
  """Inclusive running count of `starts` restarted in every segment (flat, grouped)."""
  total = np.cumsum(starts)
  before = total[first] - starts[first]  # Count before each segment's first slot.
  return total - before[seg_of]


def make_preprocess(objective_cfg, tokenizer, seed: int, seq_len: int | None = None):
  """Returns `preprocess(batch) -> batch`: span-corrupted encoder rows, span targets.

  `seq_len` is the encoder length; by default it is inferred from the packed
  rows (the inverse of `packed_length`).
  """
  cache = {}

  def preprocess(batch: dict) -> dict:
    raw = batch['tokens'].shape[1]
    if raw not in cache:
      length = seq_len or _encoder_length(objective_cfg, raw)
      cache[raw] = make_corruptor(objective_cfg, tokenizer, seed, length)
    out = cache[raw](batch)
    decoder = {'segment_ids': out['decoder_segment_ids'], 'positions': out['decoder_positions']}
    return seq2seq.model_batch(
      out,
      decoder,
      inputs=out['inputs'],
      targets=out['targets'],
      weights=out['weights'],
      start_id=tokenizer.eos_id,  # Never a target's first token, as T5's 0 (pad) start.
    )

  return preprocess


def _encoder_length(objective_cfg, raw: int) -> int:
  """The `seq_len` whose `packed_length` is `raw`."""
  seq_len = 8
  while packed_length(objective_cfg, seq_len) < raw:
    seq_len += 1
  if packed_length(objective_cfg, seq_len) != raw:
    raise ValueError(f'Packed rows of {raw} tokens match no seq_len; see packed_length.')
  return seq_len
