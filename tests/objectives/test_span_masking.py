"""Tests of objectives/span_masking.py (SpanBERT's span masking)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats

from configs.cpu import spanbert
from data import word_units
from objectives import api, span_masking
from objectives.shared import token_lm
from tests.objective_config import objective_config

# A WordPiece-style vocabulary: 5 specials, 60 word starts, 40 '##' continuations.
PIECES = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
PIECES += [f'w{i}' for i in range(60)] + [f'##c{i}' for i in range(40)]
TOKENIZER = SimpleNamespace(
  vocab_size=len(PIECES),
  pad_id=0,
  unk_id=1,
  cls_id=2,
  sep_id=3,
  mask_id=4,
  special_ids=np.arange(5, dtype=np.int32),
  id_to_piece=PIECES.__getitem__,
)
NUM_ORDINARY = len(PIECES) - 5
LAW = span_masking.span_length_law(0.2, 10)


def _objective(**kw):
  values = dict(mask_rate=0.15, mask_token_rate=0.8, random_token_rate=0.1)
  values.update(span_geometric_p=0.2, span_max_words=10)
  values.update(kw)
  return objective_config(**values)


def _batch(batch_size=1024, length=256, seed=0, epoch=0):
  """Packed rows of 1-4 framed segments, a padded tail, words of 1.7 tokens, 1% [UNK]."""
  rng = np.random.default_rng(seed)
  tokens = np.where(rng.random((batch_size, length)) < 0.6, 5, 65)
  tokens += rng.integers(0, 40, size=(batch_size, length))  # A start 5..44 or a '##' 65..104.
  tokens = np.where(rng.random(tokens.shape) < 0.01, TOKENIZER.unk_id, tokens)
  segment_ids = np.zeros((batch_size, length), np.int64)
  positions = np.zeros((batch_size, length), np.int64)
  for row in range(batch_size):
    fill = length - rng.integers(0, 30)
    cuts = np.sort(rng.choice(np.arange(8, fill - 8), size=rng.integers(0, 4), replace=False))
    bounds = np.r_[0, cuts[np.diff(np.r_[0, cuts]) >= 8], fill]  # Segments of >= 8 tokens.
    for number, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True), 1):
      segment_ids[row, a:b] = number
      positions[row, a:b] = np.arange(b - a)
      tokens[row, a], tokens[row, b - 1] = TOKENIZER.cls_id, TOKENIZER.sep_id
  tokens = np.where(segment_ids > 0, tokens, TOKENIZER.pad_id)
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': positions.astype(np.int32),
    'epoch': np.full(batch_size, epoch, np.int64),
    'example_id': np.arange(batch_size, dtype=np.int64),
  }


def _word_starts(batch):
  table = word_units.word_start_table(TOKENIZER)
  return word_units.token_word_starts(
    batch['tokens'], batch['segment_ids'], table, TOKENIZER.special_ids
  )


def _output_spans(selected):
  """(rows, first, last) of each maximal run of selected positions."""
  padded = np.pad(selected, ((0, 0), (1, 1)))
  r, first = np.nonzero(padded[:, 1:-1] & ~padded[:, :-2])
  r_end, last = np.nonzero(padded[:, 1:-1] & ~padded[:, 2:])
  np.testing.assert_array_equal(r, r_end)
  return r, first, last


def test_length_law_and_paper_mean():
  p, q = 0.2, 0.8
  np.testing.assert_allclose(LAW.sum(), 1.0)
  np.testing.assert_allclose(LAW[1:] / LAW[:-1], q)  # Geometric, truncated at 10 words.
  mean = (1 - 11 * q**10 + 10 * q**11) / (p * (1 - q**10))  # Closed form of the truncated mean.
  np.testing.assert_allclose((LAW * np.arange(1, 11)).sum(), mean)
  assert round(mean, 1) == 3.8  # SpanBERT, section 3.1: "mean span length 3.8".
  with pytest.raises(ValueError, match='p=0'):
    span_masking.span_length_law(0.0, 10)


def test_drawn_span_lengths_follow_the_truncated_geometric():
  """Every placed span's drawn length, pooled: chi-square against the law.

  A start that does not fit keeps its length for the next start, so the
  placed spans' drawn lengths are the law's (Wald: a row stops after the span
  that reaches its budget, a stopping time, so pooled counts are unbiased).
  """
  spans = span_masking.make_span_sampler(_objective(), TOKENIZER, seed=0)(_batch(4096))
  drawn = spans['drawn_words'][spans['start'] >= 0]
  assert len(drawn) > 25_000
  observed = np.bincount(drawn, minlength=11)[1:]
  assert observed.sum() == len(drawn)  # Nothing outside 1..10.
  assert scipy.stats.chisquare(observed, LAW * len(drawn)).pvalue > 1e-6
  mean, std = (
    (LAW * np.arange(1, 11)).sum(),
    math.sqrt((LAW * np.arange(1, 11) ** 2).sum() - 3.8**2),
  )
  assert abs(drawn.mean() - mean) < 5 * std / math.sqrt(len(drawn)), drawn.mean()


def test_output_spans_are_whole_words_of_their_drawn_lengths():
  batch = _batch(seed=1)
  sample = span_masking.make_span_sampler(_objective(), TOKENIZER, seed=0)
  spans = sample(batch)
  out = span_masking.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  selected = out['weights'] > 0
  tokens, segment_ids = batch['tokens'], batch['segment_ids']
  special = np.isin(tokens, TOKENIZER.special_ids)
  assert not (selected & (special | (segment_ids == 0))).any()  # No special token or padding.

  # The output's runs of masked tokens are exactly the sampled spans (none touch).
  r, first, last = _output_spans(selected)
  placed = spans['start'] >= 0
  pr, pd = np.nonzero(placed)
  order = np.lexsort((spans['start'][pr, pd], pr))
  np.testing.assert_array_equal(r, pr[order])
  np.testing.assert_array_equal(first, spans['start'][pr, pd][order])
  np.testing.assert_array_equal(last, spans['end'][pr, pd][order])

  # Whole words: a span starts at a word start and the token after it starts a unit.
  starts = _word_starts(batch)
  assert starts[r, first].all() and starts[r, last + 1].all()
  # Words per span, counted on the output, against the drawn length and the room left
  # before the next special token (the run's end), computed here from the tokens.
  cumulative = np.cumsum(starts, axis=1)
  words = cumulative[r, last] - cumulative[r, first] + 1
  stop = np.where(special, np.arange(tokens.shape[1]), tokens.shape[1])
  stop = np.minimum.accumulate(stop[:, ::-1], axis=1)[:, ::-1]  # Next special at or after.
  room = cumulative[r, stop[r, first] - 1] - cumulative[r, first] + 1
  drawn = spans['drawn_words'][pr, pd][order]
  is_last = (pd == placed.sum(1)[pr] - 1)[order]  # The span that reached the budget.
  expected = np.minimum(drawn, room)
  np.testing.assert_array_equal(words[~is_last], expected[~is_last])
  assert (words[is_last] <= expected[is_last]).all()
  cut = is_last & (words < expected)
  assert 0 < cut.sum() < len(r)
  # A cut span stops at the word holding the row's budget-th masked token.
  masked_rows = selected.sum(1)
  budget = spans['budget']
  before = masked_rows[r[cut]] - (last[cut] - first[cut] + 1)  # Masked before the cut span.
  # Where the cut span's last word starts: the latest word start up to its end.
  last_word_start = np.maximum.accumulate(np.where(starts, np.arange(tokens.shape[1]), 0), axis=1)
  last_word_start = last_word_start[r[cut], last[cut]]
  assert (before + last_word_start - first[cut] < budget[r[cut]]).all()  # Its last word is needed.
  assert (masked_rows[r[cut]] >= budget[r[cut]]).all()
  # Mean words per span: below the law's 3.8 by the truncations at run ends and budget.
  assert 3.0 < words.mean() < drawn.mean() < 3.9


def test_masked_fraction_meets_the_budget():
  batch = _batch(seed=2)
  out = span_masking.make_preprocess(_objective(), TOKENIZER, seed=5)(batch)
  selected = out['weights'] > 0
  candidates = (batch['segment_ids'] > 0) & ~np.isin(batch['tokens'], TOKENIZER.special_ids)
  n = candidates.sum(1)
  budget = np.ceil(0.15 * n - 1e-9)
  masked = selected.sum(1)
  # Every row reaches its budget and overshoots it by less than a word.
  start_positions = np.flatnonzero(_word_starts(batch).ravel())
  longest_word = np.diff(start_positions).max()
  assert (masked >= budget).all() and (masked < budget + longest_word).all()
  fraction = masked.sum() / n.sum()
  # ceil adds < 1 token per row and the last word < 1 more on average; 5 binomial sigmas.
  slack = 2 * len(n) / n.sum() + 5 * math.sqrt(0.15 * 0.85 / n.sum())
  assert 0.15 <= fraction < 0.15 + slack, fraction
  out_30 = span_masking.make_preprocess(_objective(mask_rate=0.3), TOKENIZER, seed=5)(batch)
  assert ((out_30['weights'] > 0).sum(1) >= np.ceil(0.3 * n - 1e-9)).all()


def test_replacement_is_drawn_per_span():
  batch = _batch(2048, seed=3)
  out = span_masking.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  inputs, tokens = out['inputs'], batch['tokens']
  selected = out['weights'] > 0
  np.testing.assert_array_equal(out['targets'], tokens)
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])  # Others untouched.
  r, first, last = _output_spans(selected)
  span_of = np.zeros(tokens.shape, np.int64)
  span_of[r, first] = 1
  span_of = np.cumsum(span_of.ravel()).reshape(tokens.shape) - 1  # Span index per position.
  index = span_of[selected]
  is_mask = np.bincount(index, inputs[selected] == TOKENIZER.mask_id, len(r))
  is_same = np.bincount(index, inputs[selected] == tokens[selected], len(r))
  size = last - first + 1
  masked_span = is_mask == size
  assert ((is_mask == 0) | masked_span).all()  # All of a span is [MASK], or none of it.
  other = ~masked_span
  assert not np.isin(inputs[selected & (inputs != tokens)], TOKENIZER.special_ids[:4]).any()
  kept = other & (is_same == size)
  random = other & (is_same < size)
  n = len(r)
  assert n > 10_000

  def within(count, p):
    assert abs(count / n - p) < 5 * math.sqrt(p * (1 - p) / n), (count / n, p)

  within(masked_span.sum(), 0.8)
  # A random span of k tokens equals the original with probability NUM_ORDINARY ** -k.
  collide = 0.1 * np.mean(float(NUM_ORDINARY) ** -size)
  within(random.sum(), 0.1 - collide)
  within(kept.sum(), 0.1 + collide)
  # Random spans: most of their tokens differ, replaced across the ordinary vocabulary.
  replaced = np.isin(span_of, np.flatnonzero(random)) & selected & (inputs != tokens)
  assert len(np.unique(inputs[replaced])) > 0.9 * NUM_ORDINARY


def test_span_boundaries():
  batch = _batch(batch_size=256, seed=4)
  out = span_masking.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  selected = out['weights'] > 0
  left, right, offset = out['span_left'], out['span_right'], out['span_offset']
  for name in ('span_left', 'span_right', 'span_offset'):
    assert out[name].dtype == np.int32 and out[name].shape == selected.shape
    assert not out[name][~selected].any()  # 0 where nothing is masked.
  r, first, last = _output_spans(selected)
  rows, length = selected.shape
  for a, b in ((left, first - 1), (right, last + 1), (offset, np.zeros_like(first))):
    np.testing.assert_array_equal(a[r, first], b)
  index = np.broadcast_to(np.arange(length), selected.shape)
  start_of = np.where(selected, index - offset, 0)
  # Within a span: one left and one right boundary; offsets count from its start.
  np.testing.assert_array_equal(left[selected], start_of[selected] - 1)
  np.testing.assert_array_equal(right[selected], right[np.nonzero(selected)[0], start_of[selected]])
  rr = np.nonzero(selected)[0]
  assert (left[selected] < index[selected]).all() and (right[selected] > index[selected]).all()
  assert not selected[rr, left[selected]].any() and not selected[rr, right[selected]].any()
  segment_ids = batch['segment_ids']
  np.testing.assert_array_equal(segment_ids[rr, left[selected]], segment_ids[selected])
  np.testing.assert_array_equal(segment_ids[rr, right[selected]], segment_ids[selected])
  # The framing is a valid boundary: some spans start right after [CLS] or end before [SEP].
  assert (batch['tokens'][r, first - 1] == TOKENIZER.cls_id).any()
  assert (batch['tokens'][r, last + 1] == TOKENIZER.sep_id).any()


def test_segment_edges_are_never_masked_in_unframed_rows():
  batch = _batch(batch_size=64, seed=5)
  # Replace the framing by ordinary words: the first and last words stay unmasked.
  framing = np.isin(batch['tokens'], [TOKENIZER.cls_id, TOKENIZER.sep_id])
  batch['tokens'] = np.where(framing, 7, batch['tokens']).astype(np.int32)
  out = span_masking.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  selected = out['weights'] > 0
  assert not selected[framing].any() and selected.any()
  rr = np.nonzero(selected)[0]
  np.testing.assert_array_equal(
    batch['segment_ids'][rr, out['span_left'][selected]], batch['segment_ids'][selected]
  )
  np.testing.assert_array_equal(
    batch['segment_ids'][rr, out['span_right'][selected]], batch['segment_ids'][selected]
  )


def test_determinism():
  batch = _batch(batch_size=48, seed=6)
  preprocess = span_masking.make_preprocess(_objective(), TOKENIZER, seed=0)
  out = preprocess(batch)
  for key, value in preprocess(batch).items():
    np.testing.assert_array_equal(value, out[key])
  # A row is masked the same alone, reordered, or among other rows.
  subsets = ([7], list(range(47, -1, -1)), [3, 40, 11, 29])
  others = _batch(batch_size=16, seed=7)
  for rows in subsets:
    mixed = {k: np.concatenate([others[k], batch[k][rows]]) for k in batch}
    mixed['example_id'][:16] += 1000
    got = preprocess(mixed)
    for key, value in got.items():
      np.testing.assert_array_equal(value[16:], out[key][rows])
  for changes in ({'epoch': batch['epoch'] + 1}, {'example_id': batch['example_id'] + 100}):
    other = preprocess({**batch, **changes})
    assert (other['weights'] != out['weights']).mean() > 0.1
  other_seed = span_masking.make_preprocess(_objective(), TOKENIZER, seed=1)(batch)
  assert (other_seed['weights'] != out['weights']).mean() > 0.1


@pytest.mark.parametrize(
  'changes',
  [dict(mask_rate=0.0), dict(mask_rate=1.0), dict(span_geometric_p=1.5), dict(span_max_words=0)],
)
def test_bad_config(changes):
  with pytest.raises(ValueError, match='|'.join(changes)):
    span_masking.make_preprocess(_objective(**changes), TOKENIZER, seed=0)


def test_bad_replacement_rates():
  with pytest.raises(ValueError, match='random_token_rate'):
    span_masking.make_preprocess(_objective(random_token_rate=0.3), TOKENIZER, seed=0)


def test_objective_api_and_config():
  config = spanbert.get_config()
  assert config.objective.module == 'objectives.span_masking'
  objective = api.load(config.objective.module, config.objective)
  assert objective.FRAMING == ('cls_id', 'sep_id') and objective.SHOW == 'masked'
  assert objective.loss_fn is token_lm.loss_fn  # MLM's loss over the span positions.
  assert (config.objective.span_geometric_p, config.objective.span_max_words) == (0.2, 10)
  out = objective.make_preprocess(config.objective, TOKENIZER, config.seed)(_batch(4, 64))
  assert set(out) == {
    'inputs',
    'targets',
    'weights',
    'segment_ids',
    'positions',
    'span_left',
    'span_right',
    'span_offset',
    'masked_positions',  # MLM's gathered masked positions (objectives/mlm.py).
    'masked_targets',
    'masked_weights',
    'dropped_predictions',
  }
