"""Tests of objectives/mlm.py, data/host_random.py and objectives/shared/metrics.py."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from data import host_random
from models import presets
from objectives import mlm
from objectives.shared import metrics, token_lm
from tests.objective_config import objective_config

# Special ids scattered over the vocabulary, not just 0..6.
TOKENIZER = SimpleNamespace(
  vocab_size=200,
  pad_id=0,
  unk_id=1,
  cls_id=101,
  sep_id=102,
  mask_id=103,
  bos_id=198,
  eos_id=199,
  special_ids=np.array([0, 1, 101, 102, 103, 198, 199], np.int32),
)
NUM_ORDINARY = TOKENIZER.vocab_size - len(TOKENIZER.special_ids)


def _objective(mask_rate=0.15, mask_token_rate=0.8, random_token_rate=0.1):
  return objective_config(
    mask_rate=mask_rate, mask_token_rate=mask_token_rate, random_token_rate=random_token_rate
  )


def _batch(batch_size=512, length=512, seed=0, epoch=0):
  """Random packed rows: ~20% special tokens, a padded tail of 0..99 positions per row."""
  rng = np.random.default_rng(seed)
  ordinary = np.setdiff1d(np.arange(TOKENIZER.vocab_size), TOKENIZER.special_ids)
  tokens = rng.choice(ordinary, size=(batch_size, length))
  special = rng.random((batch_size, length)) < 0.2
  tokens = np.where(special, rng.choice(TOKENIZER.special_ids, size=tokens.shape), tokens)
  segment_ids = np.where(np.arange(length) < length // 2, 1, 2)[None].repeat(batch_size, 0)
  pad_start = length - rng.integers(0, 100, size=batch_size)
  padding = np.arange(length)[None] >= pad_start[:, None]
  segment_ids = np.where(padding, 0, segment_ids)
  tokens = np.where(padding, TOKENIZER.pad_id, tokens)
  positions = np.where(padding, 0, np.arange(length)[None] % (length // 2))
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': positions.astype(np.int32),
    'epoch': np.full(batch_size, epoch, np.int64),
    'example_id': np.arange(batch_size, dtype=np.int64),
  }


def _within(count, n, p, sigmas=5.0):
  """|count / n - p| within `sigmas` binomial standard deviations."""
  bound = sigmas * math.sqrt(p * (1 - p) / n)
  assert abs(count / n - p) <= bound, (count / n, p, bound)


def _check_rates(out, batch, mask_rate, mask_token_rate, random_token_rate):
  tokens, inputs = batch['tokens'], out['inputs']
  candidates = (batch['segment_ids'] > 0) & ~np.isin(tokens, TOKENIZER.special_ids)
  selected = out['weights'] > 0
  np.testing.assert_array_equal(out['targets'], tokens)
  assert set(np.unique(out['weights'])) <= {0.0, 1.0}
  assert not (selected & ~candidates).any()  # No special token or padding is selected.
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])  # Others untouched.
  n = int(candidates.sum())
  assert n > 160_000
  _within(selected.sum(), n, mask_rate)
  k = int(selected.sum())
  masked = selected & (inputs == TOKENIZER.mask_id)
  replaced = selected & (inputs != tokens) & (inputs != TOKENIZER.mask_id)
  unchanged = selected & (inputs == tokens)
  assert masked.sum() + replaced.sum() + unchanged.sum() == k
  # A random replacement equals the original with probability 1 / NUM_ORDINARY.
  _within(masked.sum(), k, mask_token_rate)
  _within(replaced.sum(), k, random_token_rate * (1 - 1 / NUM_ORDINARY))
  unchanged_rate = 1 - mask_token_rate - random_token_rate
  _within(unchanged.sum(), k, unchanged_rate + random_token_rate / NUM_ORDINARY)
  assert not np.isin(inputs[replaced], TOKENIZER.special_ids).any()
  if random_token_rate:  # Replacements cover the ordinary vocabulary.
    assert len(np.unique(inputs[replaced])) > 0.9 * NUM_ORDINARY


def test_mlm_corruption_statistics():
  batch = _batch()
  out = mlm.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  assert {k: v.dtype for k, v in out.items()} == {
    'inputs': np.int32,
    'targets': np.int32,
    'weights': np.float32,
    'segment_ids': np.int32,
    'positions': np.int32,
    'masked_positions': np.int32,  # The gathered masked positions ([batch, P]).
    'masked_targets': np.int32,
    'masked_weights': np.float32,
    'dropped_predictions': np.float32,  # [batch]
  }
  full = ('inputs', 'targets', 'weights', 'segment_ids', 'positions')
  assert all(out[k].shape == batch['tokens'].shape for k in full)
  predictions = mlm.max_predictions(_objective(), 512)
  assert out['masked_positions'].shape == (512, predictions) == (512, 111)
  assert out['dropped_predictions'].sum() == 0  # Sized so that no row overflows.
  rows = np.arange(512)[:, None]
  slots = out['masked_weights'] > 0
  assert slots.sum() == (out['weights'] > 0).sum()  # Every selected token, once.
  np.testing.assert_array_equal(out['weights'][rows, out['masked_positions']][slots], 1.0)
  np.testing.assert_array_equal(
    out['masked_targets'][slots], out['targets'][rows, out['masked_positions']][slots]
  )
  np.testing.assert_array_equal(out['segment_ids'], batch['segment_ids'])
  np.testing.assert_array_equal(out['positions'], batch['positions'])
  _check_rates(out, batch, 0.15, 0.8, 0.1)


def test_mlm_configurable_rates():
  batch = _batch(seed=1)
  out = mlm.make_preprocess(_objective(0.3, 0.5, 0.3), TOKENIZER, seed=3)(batch)
  _check_rates(out, batch, 0.3, 0.5, 0.3)
  out = mlm.make_preprocess(_objective(0.15, 1.0, 0.0), TOKENIZER, seed=3)(batch)
  _check_rates(out, batch, 0.15, 1.0, 0.0)


def test_mlm_determinism():
  batch = _batch(batch_size=8, length=256)
  preprocess = mlm.make_preprocess(_objective(), TOKENIZER, seed=0)
  out = preprocess(batch)
  for key, value in preprocess(batch).items():
    np.testing.assert_array_equal(value, out[key])

  def differs(changes):
    other = preprocess({**batch, **changes})
    assert (other['weights'] != out['weights']).any()

  differs({'epoch': batch['epoch'] + 1})
  differs({'example_id': batch['example_id'] + 100})
  other_seed = mlm.make_preprocess(_objective(), TOKENIZER, seed=1)(batch)
  assert (other_seed['weights'] != out['weights']).any()

  # A row is masked the same alone and in any batch.
  for i in (0, 5):
    alone = preprocess({k: v[i : i + 1] for k, v in batch.items()})
    for key, value in alone.items():
      np.testing.assert_array_equal(value[0], out[key][i])
  reordered = preprocess({k: v[::-1] for k, v in batch.items()})
  for key, value in reordered.items():
    np.testing.assert_array_equal(value[::-1], out[key])


@pytest.mark.parametrize(
  'rates', [(0.0, 0.8, 0.1), (1.0, 0.8, 0.1), (-0.1, 0.8, 0.1), (0.15, 0.8, 0.3), (0.15, 1.1, 0.0)]
)
def test_mlm_bad_rates(rates):
  with pytest.raises(ValueError, match='rate'):
    mlm.make_preprocess(_objective(*rates), TOKENIZER, seed=0)


def test_mlm_negative_random_rate():
  with pytest.raises(ValueError, match='random_token_rate=-0.1'):
    mlm.make_preprocess(_objective(0.15, 0.8, -0.1), TOKENIZER, seed=0)


# host_random


def test_uniform_distribution():
  u = host_random.uniform(0, np.zeros(128), np.arange(128), 1024, stream=0)
  assert u.shape == (128, 1024) and u.dtype == np.float64
  assert u.min() >= 0.0 and u.max() < 1.0
  n = u.size
  assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
  assert scipy.stats.kstest(u.ravel(), 'uniform').pvalue > 1e-3
  assert len(np.unique(u)) == n  # No two examples or positions share a stream.
  # Positions within a row and examples in a column are both uniform.
  assert scipy.stats.kstest(u[:, 7], 'uniform').pvalue > 1e-3
  assert scipy.stats.kstest(u[3], 'uniform').pvalue > 1e-3


def test_uniform_streams_uncorrelated():
  ids = np.arange(64)
  draws = [
    host_random.uniform(0, 0, ids, 1024, stream=0),
    host_random.uniform(0, 0, ids, 1024, stream=1),
    host_random.uniform(0, 1, ids, 1024, stream=0),  # Next epoch.
    host_random.uniform(1, 0, ids, 1024, stream=0),  # Another seed.
    host_random.uniform(0, 0, ids + 1, 1024, stream=0),  # Neighbouring examples.
    host_random.uniform(0, 0, ids, 1025, stream=0)[:, 1:],  # Neighbouring positions.
  ]
  bound = 5 / math.sqrt(draws[0].size)
  for i in range(len(draws)):
    for j in range(i + 1, len(draws)):
      r = np.corrcoef(draws[i].ravel(), draws[j].ravel())[0, 1]
      assert abs(r) < bound, (i, j, r)


def test_uniform_is_a_function_of_its_keys():
  a = host_random.uniform(7, np.array([0, 3, 3]), np.array([5, 5, 9]), 32, stream=2)
  b = host_random.uniform(7, 3, np.array([9]), 32, stream=2)
  np.testing.assert_array_equal(a[2], b[0])  # Scalar and per-example epochs agree.
  np.testing.assert_array_equal(a[:, :16], host_random.uniform(7, [0, 3, 3], [5, 5, 9], 16, 2))
  assert not np.array_equal(a[0], a[1])  # Same example id, another epoch.


# metrics


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


LOGITS = np.array(
  [
    [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0], [1.0, 1.5, 0.5, 0.25]],
    [[-1.0, -2.0, 0.0, 4.0], [0.3, 0.3, 0.9, 0.1], [5.0, 1.0, 2.0, 3.0]],
  ],
  np.float32,
)  # [batch=2, length=3, vocab=4]
# Argmax hits: (0,0), (0,1) (weight 0 below), (0,2), (1,0).
TARGETS = np.array([[0, 2, 1], [3, 0, 2]], np.int32)


def test_token_cross_entropy_reference():
  weights = np.array([[1, 0, 1], [1, 1, 0]], np.float32)
  loss, m = jax.jit(metrics.token_cross_entropy)(LOGITS, TARGETS, weights)
  xent = -np.take_along_axis(_log_softmax(LOGITS.astype(np.float64)), TARGETS[..., None], -1)[
    ..., 0
  ]
  expected = (xent[0, 0] + xent[0, 2] + xent[1, 0] + xent[1, 1]) / 4
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m['loss']), (4 * expected, 4.0), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(m['accuracy']), (3.0, 4.0))
  # bfloat16 logits are computed in float32.
  loss16, _ = jax.jit(metrics.token_cross_entropy)(jnp.bfloat16(LOGITS), TARGETS, weights)
  np.testing.assert_allclose(float(loss16), expected, rtol=2e-2)
  # No weighted position: loss 0, not NaN.
  loss0, m0 = jax.jit(metrics.token_cross_entropy)(LOGITS, TARGETS, np.zeros_like(weights))
  assert float(loss0) == 0.0 and float(m0['loss'][1]) == 0.0
  assert metrics.summarize(m0) == {'loss': 0.0, 'accuracy': 0.0}
  summary = metrics.summarize(metrics.add(m, m))
  np.testing.assert_allclose(summary['loss'], expected, rtol=1e-6)
  assert summary['accuracy'] == 0.75


def test_token_cross_entropy_real_weights():
  # The docstring allows real weights: the loss is their weighted mean, also
  # when they sum to less than 1.
  weights = np.array([[0.25, 0, 0.125], [0, 0, 0]], np.float32)
  loss, _ = jax.jit(metrics.token_cross_entropy)(LOGITS, TARGETS, weights)
  xent = -np.take_along_axis(_log_softmax(LOGITS.astype(np.float64)), TARGETS[..., None], -1)[
    ..., 0
  ]
  expected = (0.25 * xent[0, 0] + 0.125 * xent[0, 2]) / 0.375
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


# The MLM loss on a tiny model


def _mlm_setup():
  cfg = presets.get_config('bert-tiny', vocab_size=64, max_len=64)
  model = mlm.build_model(cfg)
  tokens = jnp.ones((1, 16), jnp.int32)  # The init shape of tests/models: cached compiles.
  params = model.init(jax.random.key(0), tokens, tokens)['params']
  rng = np.random.default_rng(0)
  weights = (rng.random((2, 16)) < 0.3).astype(np.float32)
  weights[:, 0] = 1.0
  batch = {
    'inputs': rng.integers(7, 64, (2, 16)).astype(np.int32),
    'targets': rng.integers(7, 64, (2, 16)).astype(np.int32),
    'weights': weights,
    'segment_ids': np.array([[1] * 10 + [2] * 6, [1] * 12 + [0] * 4], np.int32),
    'positions': np.array([list(range(10)) + list(range(6)), list(range(12)) + [0] * 4], np.int32),
  }
  batch['weights'] *= batch['segment_ids'] > 0
  return model, params, batch


def test_mlm_loss_gradients_and_weights():
  model, params, batch = _mlm_setup()
  loss_and_grad = jax.jit(
    jax.value_and_grad(lambda p, b: mlm.loss_fn(p, b, None, model=model), has_aux=True)
  )
  (loss, m), grads = loss_and_grad(params, batch)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  assert float(m['loss'][1]) == batch['weights'].sum()
  np.testing.assert_allclose(float(m['loss'][0]) / float(m['loss'][1]), float(loss), rtol=1e-6)
  assert np.isfinite(float(loss)) and float(loss) > 0

  # Only weighted positions count.
  ignored = batch['weights'] == 0
  other = {**batch, 'targets': np.where(ignored, (batch['targets'] + 1) % 64, batch['targets'])}
  assert float(loss_and_grad(params, other)[0][0]) == float(loss)
  counted = {**batch, 'targets': np.where(ignored, batch['targets'], (batch['targets'] + 1) % 64)}
  assert abs(float(loss_and_grad(params, counted)[0][0]) - float(loss)) > 1e-4


def test_gathered_positions_give_the_all_positions_loss_and_gradient():
  """Projecting only the masked positions onto the vocabulary changes no number."""
  model, params, batch = _mlm_setup()
  rows = {'tokens': batch['targets'], **{k: batch[k] for k in ('segment_ids', 'positions')}}
  gathered = token_lm.model_batch(
    rows, inputs=batch['inputs'], targets=batch['targets'], weights=batch['weights'],
    max_predictions=8,
  )  # fmt: skip
  assert gathered['masked_positions'].shape == (2, 8) and gathered['dropped_predictions'].sum() == 0
  loss_and_grad = jax.jit(
    jax.value_and_grad(lambda p, b: mlm.loss_fn(p, b, None, model=model), has_aux=True)
  )
  (want, want_metrics), want_grads = loss_and_grad(params, batch)
  (got, got_metrics), got_grads = loss_and_grad(params, gathered)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for name in ('loss', 'accuracy'):
    np.testing.assert_allclose(got_metrics[name], want_metrics[name], rtol=1e-6)
  for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_overflowing_rows_are_cut_restored_and_counted():
  rng = np.random.default_rng(0)
  rows = {
    'tokens': rng.integers(7, 64, (3, 10)).astype(np.int32),
    'segment_ids': np.ones((3, 10), np.int32),
    'positions': np.broadcast_to(np.arange(10), (3, 10)).astype(np.int32),
  }
  weights = np.zeros((3, 10), np.float32)
  weights[0, [1, 4, 6, 8, 9]] = 1  # 5 selected: 2 too many.
  weights[1, [2]] = 1
  inputs = np.where(weights > 0, TOKENIZER.mask_id, rows['tokens'])
  out = token_lm.model_batch(
    rows, inputs=inputs, targets=rows['tokens'], weights=weights, max_predictions=3
  )
  np.testing.assert_array_equal(out['masked_positions'], [[1, 4, 6], [2, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(out['masked_weights'], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(out['dropped_predictions'], [2, 0, 0])
  # The cut ones are neither corrupted nor predicted, in the full-length arrays too.
  np.testing.assert_array_equal(out['inputs'][0, [8, 9]], rows['tokens'][0, [8, 9]])
  np.testing.assert_array_equal(out['weights'][0], [0, 1, 0, 0, 1, 0, 1, 0, 0, 0])
  assert float(token_lm.dropped_metric(out)['dropped_predictions'][0]) == 2.0  # Logged.


def test_max_predictions_sizes():
  assert mlm.max_predictions(_objective(), 128) == 37  # ceil(19.2 + 4 x 4.04) + 1.
  assert mlm.max_predictions(objective_config(max_predictions_per_seq=20), 128) == 20  # BERT.
  assert mlm.max_predictions(objective_config(max_predictions_per_seq=-1), 128) == 0  # Off.
  assert mlm.predicted_length(objective_config(max_predictions_per_seq=-1), 128) == 128
  with pytest.raises(ValueError, match='max_predictions_per_seq=-2'):
    mlm.max_predictions(objective_config(max_predictions_per_seq=-2), 128)


def _keyed_rows(shift: int, epoch: int, batch_size=64, length=256):
  """One long 'document' of ordinary tokens, packed with its start shifted by `shift`."""
  rng = np.random.default_rng(0)
  ordinary = np.setdiff1d(np.arange(TOKENIZER.vocab_size), TOKENIZER.special_ids)
  doc = rng.choice(ordinary, size=batch_size * length + shift)
  offsets = np.arange(batch_size * length).reshape(batch_size, length) + shift
  return {
    'tokens': doc[offsets].astype(np.int32),
    'segment_ids': np.ones((batch_size, length), np.int32),
    'positions': np.broadcast_to(np.arange(length), (batch_size, length)).astype(np.int32),
    'epoch': np.full(batch_size, epoch, np.int64),
    'example_id': np.arange(batch_size, dtype=np.int64) + 1000 * shift,
    'token_keys': (np.int64(7) << 24) | offsets.astype(np.int64),
  }


def test_static_masking_follows_the_token_through_dupe_factor_copies():
  cfg = _objective()
  with cfg.unlocked():
    cfg.dupe_factor = 3
  mask = mlm.make_masker(cfg, TOKENIZER, seed=0)

  def by_place(rows):
    """{document offset: (selected, input)} over the rows."""
    inputs, selected = mask(rows)
    places = (rows['token_keys'] & (2**24 - 1)).ravel()
    pairs = zip(selected.ravel().tolist(), inputs.ravel().tolist(), strict=True)
    return dict(zip(places.tolist(), pairs, strict=True))

  epoch0 = by_place(_keyed_rows(shift=0, epoch=0))
  # Epoch 3 is copy 0 again: packed differently (shifted by 5), every shared place masks alike.
  epoch3 = by_place(_keyed_rows(shift=5, epoch=3))
  shared = sorted(set(epoch0) & set(epoch3))
  assert len(shared) > 16000 and all(epoch0[p] == epoch3[p] for p in shared)
  selected = np.array([epoch0[p][0] for p in shared])
  _within(selected.sum(), len(shared), 0.15)
  # Epoch 1 is another copy: about 15% x 85% x 2 of the places change their selection.
  epoch1 = by_place(_keyed_rows(shift=0, epoch=1))
  changed = np.mean([epoch0[p][0] != epoch1[p][0] for p in shared])
  assert abs(changed - 2 * 0.15 * 0.85) < 0.02
  # Dynamic masking (dupe_factor 0) of the same shifted rows does not repeat epoch 0.
  dynamic = mlm.make_masker(_objective(), TOKENIZER, seed=0)
  _, sel0 = dynamic(_keyed_rows(shift=0, epoch=0))
  _, sel3 = dynamic(_keyed_rows(shift=0, epoch=3))
  assert not np.array_equal(sel0, sel3)
  with pytest.raises(ValueError, match='token_keys'):
    mask({k: v for k, v in _keyed_rows(0, 0).items() if k != 'token_keys'})
