"""Tests of objectives/span_corruption.py (T5 span corruption)."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from models import flops, heads, presets
from objectives import api
from objectives import span_corruption as sc
from objectives.shared import seq2seq
from tests.objective_config import objective_config
from tests.objectives import seq2seq_reference

# Specials at T5-like places (pad 0, EOS 1) plus a few scattered; the top ids are ordinary.
TOKENIZER = SimpleNamespace(
  vocab_size=300,
  pad_id=0,
  eos_id=1,
  unk_id=2,
  bos_id=3,
  cls_id=101,
  sep_id=102,
  mask_id=103,
  special_ids=np.array([0, 1, 2, 3, 101, 102, 103], np.int32),
)
SEQ_LEN = 128


def _objective(density=0.15, mean=3.0, num_sentinels=100):
  return objective_config(
    noise_density=density, mean_noise_span_length=mean, num_sentinels=num_sentinels
  )


def _sentinels(num=100):
  ordinary = np.setdiff1d(np.arange(TOKENIZER.vocab_size), TOKENIZER.special_ids)
  return ordinary[::-1][:num]


def _batch(batch_size=256, seed=0, epoch=0, max_doc=150, seq_len=SEQ_LEN, tiny=0.1):
  """Packed rows as the loader frames them: BOS body EOS segments, a padded tail.

  Bodies are ordinary ids below the sentinel range (so reconstruction is exact),
  with a tenth of documents tiny (1-3 tokens) to exercise short segments.
  """
  raw = sc.packed_length(_objective(), seq_len)
  rng = np.random.default_rng(seed)
  tokens = np.zeros((batch_size, raw), np.int32)
  segment_ids = np.zeros_like(tokens)
  positions = np.zeros_like(tokens)
  for row in range(batch_size):
    fill, segment = 0, 0
    while raw - fill >= 8:
      body = rng.integers(1, 4) if rng.random() < tiny else rng.integers(4, max_doc)
      body = min(body, raw - fill - 2)
      piece = [TOKENIZER.bos_id, *rng.integers(4, 100, body), TOKENIZER.eos_id]
      segment += 1
      tokens[row, fill : fill + len(piece)] = piece
      segment_ids[row, fill : fill + len(piece)] = segment
      positions[row, fill : fill + len(piece)] = np.arange(len(piece))
      fill += len(piece)
  return {
    'tokens': tokens,
    'segment_ids': segment_ids,
    'positions': positions,
    'epoch': np.full(batch_size, epoch, np.int64),
    'example_id': np.arange(batch_size, dtype=np.int64) + 1000 * seed,
  }


def _corrupt(batch, seed=0, objective=None):
  return sc.make_corruptor(objective or _objective(), TOKENIZER, seed, SEQ_LEN)(batch)


def _segments(batch, out):
  """Per (row, segment): original body, noise mask, encoder tokens, decoder tokens."""
  for row in range(batch['tokens'].shape[0]):
    for segment in range(1, batch['segment_ids'][row].max() + 1):
      where = np.flatnonzero(batch['segment_ids'][row] == segment)[1:-1]  # Body.
      yield (
        batch['tokens'][row, where],
        out['noise'][row, where],
        out['inputs'][row, out['segment_ids'][row] == segment],
        out['targets'][row, out['decoder_segment_ids'][row] == segment],
      )


def test_the_flop_count_takes_the_decoder_at_the_targets_length():
  """objectives/api.flops_per_token, through which the trainer's MFU, the pod plans and
  bench.throughput count: T5-small on span corruption runs its decoder over the target
  slots (432 of 512 positions: enough for any mix of documents in a packed row), not over
  the inputs' length."""
  cfg = presets.get_config('t5-small')
  model, objective = heads.Seq2SeqLM(cfg), _objective()
  got = api.flops_per_token(sc, objective, model, cfg, 512)
  targets = sc.decoder_length(objective, 512)
  assert got == flops.model_flops_per_token(model, cfg, 512, decoder_len=targets)
  assert targets == 432
  assert got < 0.9 * flops.model_flops_per_token(model, cfg, 512)  # Decoder at 512 tokens.


def test_packed_length_is_t5s_arithmetic():
  # T5's random_spans_helper for inputs_length 512: 568 tokens, targets 114 (with EOS).
  objective = _objective()
  assert sc.packed_length(objective, 512) == 568 + 2  # Plus the BOS / EOS framing.
  noise, spans = sc.noise_counts(568, 0.15, 3.0)
  assert (noise, spans) == (85, 28)
  assert 568 - noise + spans + 1 == 512 and noise + spans + 1 == 114
  assert sc.decoder_length(objective, 512) >= 114
  assert sc.packed_length(objective, 128) == 141 + 2
  # num_sentinels = 0: as many as the longest segment (141 body tokens) needs.
  auto = sc.make_corruptor(_objective(num_sentinels=0), TOKENIZER, 0, SEQ_LEN)(_batch(8))
  assert sc.noise_counts(141, 0.15, 3.0) == (21, 7)
  assert np.isin(_sentinels()[:7], auto['inputs']).all()
  assert not np.isin(_sentinels()[7:], auto['inputs']).any()


def test_reconstruction_gives_back_every_segment():
  batch = _batch()
  out = _corrupt(batch)
  sentinels = _sentinels()
  checked = 0
  for body, noise, encoder, decoder in _segments(batch, out):
    assert encoder[-1] == TOKENIZER.eos_id and decoder[-1] == TOKENIZER.eos_id
    encoder, decoder = encoder[:-1], decoder[:-1]
    spans = int(np.isin(encoder, sentinels).sum())
    # Sentinels in order, decreasing from the top ordinary id, in both rows.
    np.testing.assert_array_equal(encoder[np.isin(encoder, sentinels)], sentinels[:spans])
    np.testing.assert_array_equal(decoder[np.isin(decoder, sentinels)], sentinels[:spans])
    pieces = np.split(decoder, np.flatnonzero(np.isin(decoder, sentinels)))[1:]
    rebuilt = []
    for token in encoder:
      rebuilt += list(pieces.pop(0)[1:]) if token in sentinels else [token]
    np.testing.assert_array_equal(rebuilt, body)
    # The noise mask names exactly the tokens the decoder writes.
    np.testing.assert_array_equal(body[noise], decoder[~np.isin(decoder, sentinels)])
    checked += 1
  assert checked > 600, checked


def test_noise_counts_and_span_lengths_per_segment():
  batch = _batch(batch_size=2048)
  out = _corrupt(batch)
  sentinels = _sentinels()
  span_lengths, counts, long_rows = [], [], 0
  for body, noise, encoder, _ in _segments(batch, out):
    length = len(body)
    if length < 2:
      assert not noise.any()
      continue
    expected = min(max(round(length * 0.15), 1), length - 1)  # Python round: half to even.
    assert noise.sum() == expected, (length, noise.sum())  # No row here needs a repair.
    runs = np.diff(np.concatenate([[0], noise.astype(int), [0]]))
    starts, ends = np.flatnonzero(runs == 1), np.flatnonzero(runs == -1)
    assert len(starts) == np.isin(encoder, sentinels).sum()
    assert noise[-1] and not noise[0]  # Kept run first, noise run last, as T5.
    if len(starts) == max(round(expected / 3.0), 1):
      span_lengths += list(ends - starts)
      counts.append((expected, len(starts)))
    else:  # Only a multi-document row may take more noise to fit the encoder.
      long_rows += 1
  span_lengths = np.asarray(span_lengths)
  assert len(span_lengths) > 10_000 and long_rows < 0.01 * len(counts), (long_rows, len(counts))
  # Short documents round to mean span lengths off 3 (4 noise tokens make one span).
  assert abs(span_lengths.mean() - 3.0) < 0.15, span_lengths.mean()
  # Span lengths against the law: a uniform composition of each segment's n noise
  # tokens into its s spans, simulated for the same (n, s) pairs, 4 times over.
  rng = np.random.default_rng(1)
  sim = []
  for n, spans in counts * 4:
    cuts = np.sort(rng.choice(np.arange(1, n), spans - 1, replace=False))
    sim += list(np.diff(np.concatenate([[0], cuts, [n]])))
  top = 12
  observed = np.bincount(np.minimum(span_lengths, top), minlength=top + 1)[1:]
  expected = np.bincount(np.minimum(sim, top), minlength=top + 1)[1:] / 4
  stat = scipy.stats.chisquare(observed, expected * observed.sum() / expected.sum())
  assert stat.pvalue > 1e-4, (stat, observed, expected)


def test_composition_is_uniform():
  # One long document per row: n = 21 noise tokens in 7 spans; the first span's length
  # L1 of a uniform composition has P(L1 = k) = C(n - k - 1, s - 2) / C(n - 1, s - 1).
  raw = sc.packed_length(_objective(), SEQ_LEN)
  rows = 4000
  batch = _batch(batch_size=rows, max_doc=100_000, tiny=0.0)
  # One full-length document: all rows but a few percent.
  single = (batch['segment_ids'].max(1) == 1) & (batch['segment_ids'] > 0).all(1)
  out = {k: v[single] for k, v in _corrupt(batch).items()}
  rows = int(single.sum())
  body_len = raw - 2
  n, s = sc.noise_counts(body_len, 0.15, 3.0)
  noise = out['noise'][:, 1:-1]
  assert np.all(noise.sum(1) == n)
  first_start = np.argmax(noise, axis=1)
  before = np.arange(body_len) < first_start[:, None]
  first_len = np.argmin(noise | before, axis=1) - first_start  # The first span's end - start.
  k = np.arange(1, n - s + 2)
  probs = scipy.special.comb(n - k - 1, s - 2) / scipy.special.comb(n - 1, s - 1)
  observed = np.bincount(first_len, minlength=n + 1)[1 : n - s + 2]
  expected = probs * rows
  keep = expected > 5
  stat = scipy.stats.chisquare(
    np.append(observed[keep], observed[~keep].sum()),
    np.append(expected[keep], expected[~keep].sum()),
  )
  assert stat.pvalue > 1e-4, stat
  # Encoder rows of one-document rows are full: packed_length arithmetic.
  assert rows > 3500
  assert np.all(out['segment_ids'] > 0)


def test_never_corrupts_framing_or_padding_and_fits():
  batch = _batch()
  out = _corrupt(batch)
  body = (batch['segment_ids'] > 0) & (batch['positions'] > 0)
  body[:, :-1] &= batch['segment_ids'][:, 1:] == batch['segment_ids'][:, :-1]
  body[:, -1] = False
  assert not out['noise'][~body].any()
  assert out['inputs'].shape == (256, SEQ_LEN)
  assert out['targets'].shape[1] == sc.decoder_length(_objective(), SEQ_LEN)
  assert not np.isin(out['inputs'], [TOKENIZER.bos_id]).any()
  # Positions restart per segment; padding is 0 everywhere.
  for key, seg in (('inputs', 'segment_ids'), ('targets', 'decoder_segment_ids')):
    assert np.all(out[key][out[seg] == 0] == 0)
  assert np.all(out['positions'][:, 0] == 0)
  fill = (out['segment_ids'] > 0).mean()
  assert fill > 0.97, fill


def test_sentinels_are_never_special_and_never_text():
  batch = _batch(batch_size=64)
  inner = (batch['positions'] > 0) & (np.roll(batch['segment_ids'], -1, 1) == batch['segment_ids'])
  top = _sentinels()[0]
  batch['tokens'] = np.where(inner & (batch['tokens'] == 50), top, batch['tokens'])
  out = _corrupt(batch)
  assert not np.isin(_sentinels(), TOKENIZER.special_ids).any()
  # A sentinel id in the text is read as UNK, so each sentinel in a row means one span.
  written = out['targets'][out['weights'] > 0]
  assert (written == TOKENIZER.unk_id).sum() > 0
  for row in range(64):
    enc = out['inputs'][row][np.isin(out['inputs'][row], _sentinels())]
    assert len(enc) == len(
      np.unique(
        np.stack([enc, out['segment_ids'][row][np.isin(out['inputs'][row], _sentinels())]]), axis=1
      ).T
    )


def test_determinism_and_fresh_epochs():
  batch = _batch(batch_size=64)
  a = _corrupt(batch)
  half = {k: v[32:] for k, v in batch.items()}
  b = _corrupt(half)
  for key in ('inputs', 'targets', 'noise'):
    np.testing.assert_array_equal(a[key][32:], b[key])
  again = _batch(batch_size=64, epoch=1)
  c = _corrupt(again)
  assert (c['noise'] != a['noise']).mean() > 0.05
  d = _corrupt(batch, seed=1)
  assert (d['noise'] != a['noise']).mean() > 0.05


def test_bad_config_is_named():
  with pytest.raises(ValueError, match='noise_density'):
    sc.packed_length(_objective(density=0.0), 64)
  with pytest.raises(ValueError, match='num_sentinels'):
    sc.make_corruptor(_objective(num_sentinels=2), TOKENIZER, 0, SEQ_LEN)(_batch(4))


@pytest.mark.slow  # Compiles T5 forward and backward: ~30-60 s on a shared 2-core CPU.
def test_loss_is_the_decoders_cross_entropy_under_jit():
  cfg = presets.get_config(
    't5-small', vocab_size=TOKENIZER.vocab_size, num_layers=1, num_decoder_layers=1,
    d_model=16, num_heads=2, mlp_dim=32,
  )  # fmt: skip
  model = sc.build_model(cfg)
  batch = sc.make_preprocess(_objective(), TOKENIZER, seed=0)(_batch(4, seq_len=32))
  assert batch['inputs'].shape == (4, 32)  # The encoder length is inferred from the rows.
  params = jax.jit(model.init)(jax.random.key(0), *model.init_inputs(32))['params']
  seq2seq_reference.check_loss(model, batch, params)


def test_hand_computed_loss():
  # A stand-in model with fixed logits pins loss_fn's weighting: two weighted targets,
  # one with logit 1 against four zeros, one uniform; the padded position is ignored.
  logits = jnp.zeros((1, 3, 5)).at[0, 0, 2].set(1.0)
  model = SimpleNamespace(apply=lambda *args, **kwargs: logits)
  batch = {name: jnp.zeros((1, 3), jnp.int32) for name in seq2seq.MODEL_INPUTS}
  batch.update(targets=jnp.array([[2, 4, 0]]), weights=jnp.array([[1.0, 1.0, 0.0]]))
  loss, metrics = jax.jit(lambda b: seq2seq.loss_fn({}, b, None, model=model))(batch)
  e = np.e
  np.testing.assert_allclose(loss, (-np.log(e / (e + 4)) + np.log(5)) / 2, rtol=1e-6)
  assert float(metrics['loss'][1]) == 2.0


def test_rows_that_round_over_the_encoder_are_repaired_not_clipped():
  # 13 documents of 9 tokens (143 packed) corrupt to 13 * 10 = 130 > 128 tokens: the
  # first (longest) segment takes 2 more noise tokens; everything still reconstructs.
  raw = sc.packed_length(_objective(), SEQ_LEN)
  segment_ids = np.repeat(np.arange(1, 14), 11)[None].repeat(4, 0).astype(np.int32)
  positions = np.tile(np.arange(11), 13)[None].repeat(4, 0).astype(np.int32)
  body = np.random.default_rng(0).integers(4, 100, (4, raw))
  tokens = np.where(positions == 0, TOKENIZER.bos_id, np.where(positions == 10, 1, body))
  batch = dict(tokens=tokens.astype(np.int32), segment_ids=segment_ids, positions=positions,
               epoch=np.zeros(4, np.int64), example_id=np.arange(4))  # fmt: skip
  out = _corrupt(batch)
  assert out['inputs'].shape == (4, SEQ_LEN) and np.all(out['segment_ids'] > 0)
  noise = [n.sum() for _, n, _, _ in _segments(batch, out)]
  assert noise == [3, *[1] * 12] * 4
  for body, _, encoder, decoder in _segments(batch, out):
    pieces = np.split(decoder[:-1], np.flatnonzero(np.isin(decoder, _sentinels())))[1:]
    rebuilt = [
      t for token in encoder[:-1] for t in (pieces.pop(0)[1:] if token in _sentinels() else [token])
    ]
    np.testing.assert_array_equal(rebuilt, body)
