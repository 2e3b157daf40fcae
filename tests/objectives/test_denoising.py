"""Tests of objectives/shared/seq2seq.py and objectives/denoising.py (BART token masking)."""

from types import SimpleNamespace

import jax
import numpy as np
import scipy.stats

from data import host_random
from models import presets
from objectives import denoising, mlm
from objectives.shared import seq2seq
from tests.objective_config import objective_config
from tests.objectives import seq2seq_reference
from tests.objectives.test_mlm import TOKENIZER, _batch, _objective, _within


def test_shift_right_restarts_in_every_segment():
  targets = np.array([[11, 12, 13, 21, 22, 0, 0]])
  segment_ids = np.array([[1, 1, 1, 2, 2, 0, 0]])
  got = seq2seq.shift_right(targets, segment_ids, start_id=9)
  np.testing.assert_array_equal(got, [[9, 11, 12, 9, 21, 9, 0]])


def test_preprocess_masks_the_encoder_and_targets_the_original():
  batch = _batch(batch_size=64, length=128)
  out = denoising.make_preprocess(_objective(), TOKENIZER, seed=3)(batch)
  expected_inputs, selected = mlm.make_masker(_objective(), TOKENIZER, seed=3)(batch)
  np.testing.assert_array_equal(out['inputs'], expected_inputs)  # MLM's corruption exactly.
  np.testing.assert_array_equal(out['targets'], batch['tokens'])
  np.testing.assert_array_equal(out['weights'], batch['segment_ids'] > 0)  # Every real token.
  np.testing.assert_array_equal(out['decoder_segment_ids'], batch['segment_ids'])
  starts = np.ones_like(batch['segment_ids'], bool)
  starts[:, 1:] = batch['segment_ids'][:, 1:] != batch['segment_ids'][:, :-1]
  assert np.all(out['decoder_inputs'][starts] == TOKENIZER.eos_id)
  np.testing.assert_array_equal(out['decoder_inputs'][:, 1:][~starts[:, 1:]],
                                batch['tokens'][:, :-1][~starts[:, 1:]])  # fmt: skip
  rate = selected.sum() / ((batch['segment_ids'] > 0) & ~np.isin(batch['tokens'],
                                                                  TOKENIZER.special_ids)).sum()  # fmt: skip
  assert abs(rate - 0.15) < 0.01, rate


def test_loss_is_the_decoders_cross_entropy_under_jit():
  cfg = presets.get_config(
    'bart-base', vocab_size=TOKENIZER.vocab_size, num_layers=1, num_decoder_layers=1,
    d_model=16, num_heads=2, mlp_dim=32, max_len=40,
  )  # fmt: skip
  model = denoising.build_model(cfg)
  batch = denoising.make_preprocess(_objective(), TOKENIZER, seed=0)(_batch(4, 32))
  params = jax.jit(model.init)(jax.random.key(0), *model.init_inputs(32))['params']
  seq2seq_reference.check_loss(model, batch, params)


# ---- BART's other noising functions (text infilling, deletion, permutation, rotation).

# Ids ending in 5 are sentence ends ('w.'), the rest plain words.
PIECE_TOKENIZER = SimpleNamespace(
  **vars(TOKENIZER), id_to_piece=lambda i: 'w.' if i % 10 == 5 else 'w'
)


def _framed_batch(batch_size=256, length=256, epoch=0, first_id=0):
  """Packed rows of 2 segments framed BOS ... EOS, ordinary tokens inside, a padded tail."""
  rng = np.random.default_rng(first_id + 7)
  ordinary = np.setdiff1d(np.arange(TOKENIZER.vocab_size), TOKENIZER.special_ids)
  tokens = rng.choice(ordinary, size=(batch_size, length))
  half = length // 2
  segment_ids = np.where(np.arange(length) < half, 1, 2)[None].repeat(batch_size, 0)
  end = length - rng.integers(0, 40, size=batch_size)  # Second segment's end.
  index = np.arange(length)[None]
  segment_ids = np.where(index >= end[:, None], 0, segment_ids)
  tokens = np.where(index % half == 0, TOKENIZER.bos_id, tokens)
  tokens = np.where((index == half - 1) | (index == end[:, None] - 1), TOKENIZER.eos_id, tokens)
  tokens = np.where(segment_ids == 0, TOKENIZER.pad_id, tokens)
  positions = np.where(segment_ids == 0, 0, index % half)
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': positions.astype(np.int32),
    'epoch': np.full(batch_size, epoch, np.int64),
    'example_id': np.arange(first_id, first_id + batch_size, dtype=np.int64),
  }


def _bart(**keys):
  values = dict(mask_rate=0.0, mask_token_rate=0.8, random_token_rate=0.1, delete_rate=0.0,
                infill_rate=0.0, poisson_lambda=3.0, permute_sentences=False,
                rotate_document=False)  # fmt: skip
  values.update(keys)
  return objective_config(**values)


def _segments(row_tokens, row_segments):
  return [row_tokens[row_segments == s] for s in np.unique(row_segments[row_segments > 0])]


def _infill_spans(batch, cfg):
  """The infilling spans as denoising draws them: (starts, lengths, covered, movable)."""
  movable = (batch['segment_ids'] > 0) & ~np.isin(batch['tokens'], TOKENIZER.special_ids)
  _, rank, count, before = denoising._segment_layout(movable, batch['segment_ids'])
  draw = lambda stream: host_random.uniform(  # noqa: E731
    3, batch['epoch'], batch['example_id'], batch['tokens'].shape[1], stream
  )
  rate = denoising.span_start_rate(cfg.infill_rate, cfg.poisson_lambda)
  cdf = denoising._poisson_table(cfg.poisson_lambda)
  starts, lengths, covered = denoising.infill_spans(draw, movable, rank, count, before, rate, cdf)
  return starts, lengths, covered, movable, count - rank


def test_infill_span_lengths_are_poisson_and_cover_the_rate():
  batch, cfg = _framed_batch(512, 512), _bart(infill_rate=0.3)
  starts, lengths, covered, movable, remaining = _infill_spans(batch, cfg)
  # Spans not clipped by a segment's end have exact Poisson(3) lengths.
  free = starts & (lengths < remaining)
  observed = np.bincount(lengths[free], minlength=12)
  k = np.arange(len(observed))
  pmf = scipy.stats.poisson.pmf(k, 3.0)
  pmf[-1] += scipy.stats.poisson.sf(len(observed) - 1, 3.0)
  bins = 10  # Pool the tail (k >= 9) so every expected count is large.
  obs = np.append(observed[: bins - 1], observed[bins - 1 :].sum())
  exp = np.append(pmf[: bins - 1], pmf[bins - 1 :].sum()) * free.sum()
  assert free.sum() > 10_000 and observed[0] > 300  # Zero-length spans are drawn.
  assert scipy.stats.chisquare(obs, exp).pvalue > 1e-4, (obs, exp)
  fraction = covered.sum() / movable.sum()
  assert abs(fraction - 0.3) < 0.015, fraction
  assert not np.any(covered & ~movable)


def test_each_infilled_span_becomes_exactly_one_mask():
  batch, cfg = _framed_batch(128, 256), _bart(infill_rate=0.3)
  out = denoising.make_preprocess(cfg, TOKENIZER, seed=3)(batch)
  starts, lengths, covered, movable, _ = _infill_spans(batch, cfg)
  # [MASK] count = span count (zero-length included); length drops by covered - spans.
  masks = (out['inputs'] == TOKENIZER.mask_id).sum(1)
  np.testing.assert_array_equal(masks, starts.sum(1))
  real_in = (out['segment_ids'] > 0).sum(1)
  np.testing.assert_array_equal(real_in, (batch['segment_ids'] > 0).sum(1) - covered.sum(1)
                                + starts.sum(1))  # fmt: skip
  # Removing the [MASK]s leaves the uncovered tokens in order; no two [MASK]s from one span.
  for r in range(8):
    kept = out['inputs'][r][(out['segment_ids'][r] > 0) & (out['inputs'][r] != TOKENIZER.mask_id)]
    seg = batch['segment_ids'][r] > 0
    np.testing.assert_array_equal(kept, batch['tokens'][r][seg & ~covered[r]])
  np.testing.assert_array_equal(out['targets'], batch['tokens'])
  np.testing.assert_array_equal(out['weights'], batch['segment_ids'] > 0)


def test_repacked_encoder_segments_are_contiguous_with_fresh_positions():
  batch = _framed_batch(64, 256)
  out = denoising.make_preprocess(_bart(infill_rate=0.3, delete_rate=0.1), TOKENIZER, 1)(batch)
  seg = out['segment_ids']
  real = seg > 0
  assert np.all(np.diff(seg, axis=1)[real[:, 1:]] >= 0)  # Segments in order, padding last.
  assert np.all(~real[:, :-1] <= ~real[:, 1:])
  starts = np.ones_like(real)
  starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
  assert np.all(out['positions'][real & starts] == 0)
  inner = real & ~starts
  np.testing.assert_array_equal(out['positions'][:, 1:][inner[:, 1:]],
                                out['positions'][:, :-1][inner[:, 1:]] + 1)  # fmt: skip
  assert np.all(out['inputs'][~real] == TOKENIZER.pad_id)


def test_deletion_rate_and_never_specials():
  batch = _framed_batch(512, 512)
  out = denoising.make_noiser(_bart(delete_rate=0.2), TOKENIZER, seed=5)(batch)
  movable = (batch['segment_ids'] > 0) & ~np.isin(batch['tokens'], TOKENIZER.special_ids)
  deleted = (batch['segment_ids'] > 0).sum() - (out['segment_ids'] > 0).sum()
  _within(deleted, movable.sum(), 0.2)
  for name in ('bos_id', 'eos_id'):  # Every framing token survives.
    special = getattr(TOKENIZER, name)
    assert (out['inputs'] == special).sum() == (batch['tokens'] == special).sum()
  for r in range(8):  # The survivors are a subsequence, in order.
    got = out['inputs'][r][out['segment_ids'][r] > 0]
    src = batch['tokens'][r][batch['segment_ids'][r] > 0]
    at = 0
    for token in got:  # Raises IndexError if `got` is not a subsequence of `src`.
      at += np.flatnonzero(src[at:] == token)[0] + 1


def test_token_masking_still_masks_the_rate():
  batch = _framed_batch(256, 512)
  out = denoising.make_preprocess(_bart(mask_rate=0.3, mask_token_rate=1.0,
                                        random_token_rate=0.0), TOKENIZER, 2)(batch)  # fmt: skip
  movable = (batch['segment_ids'] > 0) & ~np.isin(batch['tokens'], TOKENIZER.special_ids)
  _within((out['inputs'] == TOKENIZER.mask_id).sum(), movable.sum(), 0.3)


def _moved_whole(source: list, permuted: list, ends) -> bool:
  """Whether `permuted` (the permuted text split after end marks) is `source`'s sentences
  in some order. Only the last source sentence may lack an end mark; moved inside the
  text, it runs into the sentence after it, so one piece is it plus a whole sentence."""
  if sorted(source) == sorted(permuted):
    return True
  last, rest = source[-1], list(source[:-1])
  if ends[last[-1]]:  # Every sentence ends with a mark: splitting recovers them exactly.
    return False
  for piece in permuted:
    if piece in rest:
      rest.remove(piece)
    elif last is not None and piece[: len(last)] == last and piece[len(last) :] in rest:
      rest.remove(piece[len(last) :])
      last = None
    else:
      return False
  return not rest and last is None


def test_moved_whole_tells_whole_sentences_from_broken_ones():
  ends = np.zeros(20, bool)
  ends[9] = True  # Id 9 ends a sentence.
  a, b, c = (1, 2, 9), (3, 9), (4, 5)  # c, the last, has no end mark.
  assert _moved_whole([a, b, c], [b, a, c], ends)
  assert _moved_whole([a, b, c], [b, c + a], ends)  # c moved before a: they read as one.
  assert not _moved_whole([a, b, c], [b, (4, 1, 2, 9), (5,)], ends)  # c broken apart.
  assert not _moved_whole([a, b, c], [(2, 1, 9), b, c], ends)  # Tokens moved inside a.
  assert not _moved_whole([a, b], [b, (1, 2), (9,)], ends)


def test_sentence_permutation_permutes_whole_sentences():
  batch = _framed_batch(64, 256)
  out = denoising.make_noiser(_bart(permute_sentences=True), PIECE_TOKENIZER, seed=0)(batch)
  ends = denoising.sentence_end_table(PIECE_TOKENIZER)
  changed = 0
  for r in range(64):
    for src, got in zip(_segments(batch['tokens'][r], batch['segment_ids'][r]),
                        _segments(out['inputs'][r], out['segment_ids'][r]), strict=True):  # fmt: skip
      assert got[0] == src[0] and got[-1] == src[-1]  # BOS / EOS stay.
      split = lambda t: [tuple(s) for s in np.split(t, np.flatnonzero(ends[t]) + 1) if len(s)]  # noqa: E731
      a, b = split(src[1:-1]), split(got[1:-1])
      assert _moved_whole(a, b, ends), (a, b)
      assert sorted(got.tolist()) == sorted(src.tolist())
      changed += a != b
  assert changed > 100


def test_rotation_is_a_rotation():
  batch = _framed_batch(64, 256)
  out = denoising.make_noiser(_bart(rotate_document=True), TOKENIZER, seed=0)(batch)
  offsets = []
  for r in range(64):
    for src, got in zip(_segments(batch['tokens'][r], batch['segment_ids'][r]),
                        _segments(out['inputs'][r], out['segment_ids'][r]), strict=True):  # fmt: skip
      inner, rotated = src[1:-1], got[1:-1]
      shifts = [k for k in np.flatnonzero(inner == rotated[0])
                if np.array_equal(np.roll(inner, -k), rotated)]  # fmt: skip
      assert shifts, (inner, rotated)
      shift = shifts[0]
      offsets.append(shift / len(inner))
  assert scipy.stats.kstest(offsets, 'uniform').pvalue > 1e-3


def test_noise_is_deterministic_per_example_and_changes_with_epoch():
  cfg = _bart(infill_rate=0.3, permute_sentences=True, mask_rate=0.1)
  pre = denoising.make_preprocess(cfg, PIECE_TOKENIZER, seed=4)
  whole = pre(_framed_batch(16, 128))
  part = pre({k: v[8:] for k, v in _framed_batch(16, 128).items()})
  for key in ('inputs', 'segment_ids', 'positions', 'decoder_inputs'):
    np.testing.assert_array_equal(whole[key][8:], part[key])
  again = pre(_framed_batch(16, 128, epoch=1))
  assert np.mean(again['inputs'] != whole['inputs']) > 0.2
