"""SpanBERT's span masking (Joshi et al. 2020, section 3.1), host side.

Masks contiguous spans of whole words instead of single tokens. For each row,
repeat until `mask_rate` (15%) of its candidate tokens are masked: draw a span
length in words, l ~ Geo(p = 0.2) truncated to 1..10 and renormalized (mean
3.8 words, the paper's figure; clipping by min(l, 10) would give 4.5), and a
starting word uniformly among the row's candidate words; the span is that word
and the l - 1 following ones. The 80/10/10 choice is drawn once per span: all
its tokens become [MASK], or all random ordinary tokens, or all stay.

Words are data/word_units.py's (SentencePiece '▁', WordPiece '##').
Candidates are the non-special tokens of real segments; a segment's first and
last tokens (the [CLS] / [SEP] framing) never are, so every span has a left and
a right neighbour in its own segment. Departures from SpanBERT's code, each so
that spans stay whole-word, keep their drawn lengths and their own boundaries:

  * A span stops at the end of its run of candidate words (a segment's end or
    a special token such as [UNK]) instead of crossing it.
  * A start whose span would overlap or touch a placed span is rejected and the
    length is kept for the next start (SpanBERT rejects only a start inside the
    mask, then merges overlapping spans). Rejecting the length instead would
    favour short spans; keeping it, the placed spans' drawn lengths are exactly
    Geo(p) truncated. Every span is flanked by unmasked tokens (the span
    boundary objective's inputs).
  * The span that reaches the budget keeps the words that start before the
    budget is met (SpanBERT cuts it mid-word), so a row masks between its
    budget, ceil(mask_rate * candidates), and budget + one word - 1 tokens.

So the spans' lengths in words are the drawn ones, min(l, room to the run's
end), except that the last span of a row may be cut at the budget.

Vectorized: starts are drawn in rounds of `_DRAWS` per row (one host_random
stream per round; lengths from one stream, the j-th placed span taking the
j-th), so a row's spans depend only on (seed, epoch, example id). A round is a
loop over its `_DRAWS` draws, each step vectorized over the rows still under
budget; the next round takes only the rows still under budget, and at most
`_ROUNDS` run (a row that cannot place its budget in `_DRAWS * _ROUNDS` starts
stays under it; 512-token rows of text need about 20, and at most 40).

Besides MLM's batch (objectives/shared/token_lm.py), preprocess adds, per position of a
masked span: `span_left` / `span_right`, the positions of the tokens just
before / after the span, and `span_offset`, the position within the span (all
int32 [batch, length], 0 elsewhere), for the span boundary objective.
"""

import numpy as np
from ml_collections import config_dict

from data import host_random, word_units
from objectives import mlm
from objectives.shared import token_lm

FRAMING = mlm.FRAMING
SHOW = 'masked'
# The objective API's eval figures and loss: token_lm's.
eval_summary = token_lm.eval_summary
loss_fn = token_lm.loss_fn
# Only the masked positions reach the vocabulary (objectives/mlm.py).
predicted_length = mlm.predicted_length
build_model = mlm.build_model

# Start draws per row per round, and rounds at most: a 512-token row of text places
# about 17 spans (of 1.2 tokens per word) for its 77-token budget in about 18 draws.
_DRAWS = 32
_ROUNDS = 8
# Streams: the 80/10/10 choice (per position, read at a span's start), the random
# replacements (per position), span lengths (per span), and starts (round r: 3 + r).
_ACTION_STREAM, _REPLACE_STREAM, _LENGTH_STREAM, _FIRST_START_STREAM = 0, 1, 2, 3


def config() -> config_dict.ConfigDict:
  """SpanBERT span masking's keys."""
  c = config_dict.ConfigDict()
  c.span_geometric_p = 0.2  # Span lengths in words ~ Geometric(p), clipped to span_max_words.
  c.span_max_words = 10  # Longest span, in words.
  return c


def span_length_law(p: float, max_words: int) -> np.ndarray:
  """[max_words] probabilities of spans of 1..max_words words: Geo(p) truncated, renormalized."""
  if not 0.0 < p <= 1.0 or max_words < 1:
    raise ValueError(f'span geometric p={p} must be in (0, 1] and max_words={max_words} >= 1.')
  pmf = p * (1.0 - p) ** np.arange(max_words)
  return pmf / pmf.sum()


def _words(batch: dict, table: np.ndarray, special_ids: np.ndarray) -> dict:
  """The candidate words of each row, compacted to the left: [batch, words] arrays.

  Returns 'start' / 'end' (first / last token of each word; slots past a row's
  count hold -2 so nothing is adjacent to them), 'run_last' (index of the last
  word of the word's run of contiguous candidate words), 'count' [batch],
  'tokens' [batch] (candidate tokens) and 'unit_end' [batch, length] (last token
  of the unit holding each position), 'word_index' [batch, length] (the word of
  each position of a candidate word).
  """
  tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
  rows, length = tokens.shape
  starts = word_units.token_word_starts(tokens, segment_ids, table, special_ids)
  index = np.arange(length)
  # The first unit start at or after each position (a right-to-left running minimum);
  # a unit ends just before the next one starts.
  start_from = np.minimum.accumulate(np.where(starts, index, length)[:, ::-1], axis=1)[:, ::-1]
  unit_end = np.full((rows, length), length - 1)  # [batch, length]
  unit_end[:, :-1] = start_from[:, 1:] - 1
  edge = np.ones((rows, length), bool)  # First or last token of a segment (the framing).
  edge[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
  edge[:, :-1] |= segment_ids[:, :-1] != segment_ids[:, 1:]
  ordinary = (segment_ids > 0) & ~np.isin(tokens, special_ids)
  ends_on_edge = np.take_along_axis(edge, unit_end, axis=1)
  candidate = starts & ordinary & ~edge & ~ends_on_edge  # [batch, length]: a candidate word starts.

  count = candidate.sum(1)
  width = max(int(count.max(initial=0)), 1)
  r, c = np.nonzero(candidate)
  word_index = np.cumsum(candidate, axis=1) - 1  # [batch, length]: the latest word begun.
  slot = word_index[r, c]
  start = np.full((rows, width), -2)
  end = np.full((rows, width), -2)
  start[r, slot], end[r, slot] = c, unit_end[r, c]
  # Word j + 1 continues word j's run when it begins right after it.
  joined = np.zeros((rows, width), bool)
  joined[:, :-1] = (end[:, :-1] + 1 == start[:, 1:]) & (start[:, 1:] >= 0)
  slots = np.arange(width)
  run_last = np.minimum.accumulate(np.where(joined, width, slots)[:, ::-1], axis=1)[:, ::-1]
  return {
    'start': start,
    'end': end,
    'run_last': run_last,
    'count': count,
    'tokens': np.where(start >= 0, end - start + 1, 0).sum(1),
    'unit_end': unit_end,
    'word_index': word_index,
  }


def make_span_sampler(objective_cfg, tokenizer, seed: int):
  """Returns `sample(batch) -> dict`: the spans of each row, in the order they were placed.

  The dict holds, per span ([batch, spans]; padded with -1 or 0 past a row's
  count): 'start' / 'end' (first / last token; -1: none), 'drawn_words' (its
  drawn length), 'room' (candidate words from its first word to the end of
  their run) and 'words' (words it covers: min(drawn, room), fewer for the span
  that reaches the budget); and per row 'budget' (tokens to mask), 'masked'
  (tokens masked) and 'draws' (start draws used).
  """
  mask_rate = objective_cfg.mask_rate
  if not 0.0 < mask_rate < 1.0:
    raise ValueError(f'objective.mask_rate={mask_rate} must be in (0, 1).')
  p = objective_cfg.span_geometric_p
  max_words = objective_cfg.span_max_words
  if not 0.0 < p <= 1.0 or max_words < 1:
    raise ValueError(
      f'objective.span_geometric_p={p} must be in (0, 1] and objective.span_max_words='
      f'{max_words} >= 1.'
    )
  cdf = np.cumsum(span_length_law(p, max_words))
  special_ids = np.asarray(tokenizer.special_ids)
  table = word_units.word_start_table(tokenizer)

  def sample(batch: dict) -> dict:
    words = _words(batch, table, special_ids)
    rows, length = batch['tokens'].shape
    epoch, example_id = batch['epoch'], batch['example_id']
    budget = np.ceil(mask_rate * words['tokens'] - 1e-9).astype(np.int64)  # [batch]
    # The j-th span placed in a row has the j-th drawn length: a draw whose start
    # does not fit keeps its length for the next start, so lengths stay Geo(p).
    u = host_random.uniform(seed, epoch, example_id, _DRAWS * _ROUNDS, _LENGTH_STREAM)
    lengths = 1 + np.minimum(np.searchsorted(cdf, u, side='right'), max_words - 1)
    spans = {name: np.full((rows, 0), -1) for name in ('start', 'end', 'words', 'room')}
    placed = np.zeros(rows, np.int64)  # Spans placed per row.
    masked = np.zeros(rows, np.int64)  # Tokens masked per row.
    draws = np.zeros(rows, np.int64)
    for round_ in range(_ROUNDS):
      active = np.flatnonzero(masked < budget)  # Rows still under budget.
      if not len(active):
        break
      n, a_rows = len(active), np.arange(len(active))
      stream = _FIRST_START_STREAM + round_
      u = host_random.uniform(seed, epoch[active], example_id[active], _DRAWS, stream)
      count = words['count'][active, None]
      first_words = np.minimum((u * count).astype(np.int64), count - 1)  # [active, draws]
      start, end, run_last = (words[k][active] for k in ('start', 'end', 'run_last'))
      unit_end, word_index = words['unit_end'][active], words['word_index'][active]
      a_lengths, a_budget = lengths[active], budget[active]
      a_placed, a_masked, a_draws = placed[active], masked[active], draws[active]
      # This round's spans go after the earlier ones: [active, spans so far + draws].
      width = spans['start'].shape[1]
      grown = {k: np.full((n, width + _DRAWS), -1) for k in spans}
      for k in spans:
        grown[k][:, :width] = spans[k][active]
      # An empty slot gets a start past the row's end, so no span clashes with it below.
      grown['start'][grown['start'] < 0] = length + 3
      for k in range(_DRAWS):
        open_ = a_masked < a_budget
        if not open_.any():
          break
        first = first_words[:, k]
        room = run_last[a_rows, first] - first + 1
        last = first + np.minimum(a_lengths[a_rows, a_placed], room) - 1
        s, e = start[a_rows, first], end[a_rows, last]
        # Reject a start whose span overlaps or touches (no unmasked token between) a span.
        clash = (s[:, None] <= grown['end'] + 1) & (grown['start'] <= e[:, None] + 1)
        take = open_ & ~clash.any(1)
        # The span that reaches the budget ends with the word holding the budget's last token.
        at = np.minimum(s + a_budget - a_masked - 1, e)
        e = np.where(e > at, unit_end[a_rows, np.maximum(at, 0)], e)
        i = np.flatnonzero(take)
        column = a_placed[i]
        grown['start'][i, column], grown['end'][i, column] = s[i], e[i]
        grown['words'][i, column] = word_index[i, e[i]] - first[i] + 1
        grown['room'][i, column] = room[i]
        a_masked[i] += e[i] - s[i] + 1
        a_placed[i] += 1
        a_draws += open_
      grown['start'][grown['start'] > length] = -1  # Empty again.
      spans = {k: _put_rows(spans[k], active, grown[k]) for k in spans}
      placed[active], masked[active], draws[active] = a_placed, a_masked, a_draws
    used = np.arange(spans['start'].shape[1]) < placed[:, None]
    drawn = np.where(used, lengths[:, : spans['start'].shape[1]], 0)
    return {**spans, 'drawn_words': drawn, 'budget': budget, 'masked': masked, 'draws': draws}

  return sample


def _put_rows(table: np.ndarray, active: np.ndarray, new: np.ndarray) -> np.ndarray:
  """`table` [batch, D] widened to `new`'s width (with -1), `new` [active, D'] at `active`."""
  out = np.full((len(table), new.shape[1]), -1, table.dtype)
  out[:, : table.shape[1]] = table
  out[active] = new
  return out


def make_masker(objective_cfg, tokenizer, seed: int):
  """Returns `mask(batch) -> (inputs, selected, boundaries)` with whole-word spans as units.

  `selected` [batch, length] marks the masked spans; `inputs` has each span
  replaced wholly by [MASK], wholly by random ordinary tokens, or kept;
  `boundaries` holds 'span_left', 'span_right', 'span_offset' (see the module).
  """
  sample = make_span_sampler(objective_cfg, tokenizer, seed)
  mask_token_rate, random_token_rate = (
    objective_cfg.mask_token_rate,
    objective_cfg.random_token_rate,
  )
  if min(mask_token_rate, random_token_rate) < 0 or mask_token_rate + random_token_rate > 1:
    raise ValueError(
      f'objective.mask_token_rate={mask_token_rate} and random_token_rate={random_token_rate}'
      ' must be >= 0 and sum to at most 1.'
    )
  special_ids = np.asarray(tokenizer.special_ids)
  replacement_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), special_ids).astype(np.int32)

  def mask(batch: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    tokens = batch['tokens']  # [batch, length]
    rows, length = tokens.shape
    spans = sample(batch)
    r, d = np.nonzero(spans['start'] >= 0)
    starts, ends = spans['start'][r, d], spans['end'][r, d]
    # Each position's latest span start, and that span's last token.
    first = np.full((rows, length), -1)
    first[r, starts] = starts
    first = np.maximum.accumulate(first, axis=1)  # [batch, length]
    last = np.full((rows, length), -1)
    last[r, starts] = ends
    last = np.take_along_axis(last, np.maximum(first, 0), axis=1)
    index = np.arange(length)
    selected = (first >= 0) & (index <= last)

    draw = lambda stream: host_random.uniform(  # noqa: E731
      seed, batch['epoch'], batch['example_id'], length, stream
    )
    action = np.take_along_axis(draw(_ACTION_STREAM), np.maximum(first, 0), axis=1)  # Per span.
    to_mask = selected & (action < mask_token_rate)
    to_random = selected & (action >= mask_token_rate)
    to_random &= action < mask_token_rate + random_token_rate
    pick = (draw(_REPLACE_STREAM) * len(replacement_ids)).astype(np.int64)
    random_ids = replacement_ids[np.minimum(pick, len(replacement_ids) - 1)]
    inputs = np.where(to_mask, tokenizer.mask_id, np.where(to_random, random_ids, tokens))
    boundaries = {
      'span_left': np.where(selected, first - 1, 0).astype(np.int32),
      'span_right': np.where(selected, last + 1, 0).astype(np.int32),
      'span_offset': np.where(selected, index - first, 0).astype(np.int32),
    }
    return inputs, selected, boundaries

  return mask


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch`: MLM inputs with span masks and span boundaries."""
  mask = make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    inputs, selected, boundaries = mask(batch)
    out = mlm.model_batch(objective_cfg, batch, inputs, selected)
    out.update(boundaries)
    return out

  return preprocess
