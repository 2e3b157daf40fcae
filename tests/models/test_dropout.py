"""models/dropout.py: the hashed 16-bit draws by hand, their uniformity and independence,
the realized rate and the exact expectation, determinism and the same mask on any device
layout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from models import dropout


def test_thresholds_round_to_sixteen_bits_and_bad_rates_are_refused():
  assert dropout.drop_threshold(0.0) == 0
  assert dropout.drop_threshold(0.1) == 6554  # Realized rate 0.100006.
  assert dropout.drop_threshold(1e-9) == 1  # A positive rate drops something.
  assert dropout.keep_scale(0.1) == 65536 / (65536 - 6554)
  for rate in (-0.1, 1.0):
    with pytest.raises(ValueError, match=r'must be in \[0, 1\)'):
      dropout.drop_threshold(rate)


def _mix(h: np.ndarray) -> np.ndarray:
  """MurmurHash3's fmix32 in numpy's uint32 arithmetic (which wraps, as XLA's does)."""
  h = h ^ (h >> np.uint32(16))
  h = h * np.uint32(0x85EBCA6B)
  h = h ^ (h >> np.uint32(13))
  h = h * np.uint32(0xC2B2AE35)
  return h ^ (h >> np.uint32(16))


def test_draws_are_the_hash_of_each_position_by_hand():
  key, shape = jax.random.key(3), (2, 3, 5)
  s0, s1 = np.asarray(jax.random.bits(key, (2,), jnp.uint32))
  rows = np.arange(6, dtype=np.uint32).reshape(2, 3, 1)  # The leading axes, flattened.
  columns = np.arange(5, dtype=np.uint32)
  with np.errstate(over='ignore'):
    expected = _mix(_mix(rows ^ s0) + _mix(columns ^ s1)) >> np.uint32(16)
  got = np.asarray(dropout.draws(key, shape))
  assert got.dtype == np.uint32
  np.testing.assert_array_equal(got, expected)
  assert dropout.draws(key, ()).shape == () and dropout.draws(key, (7,)).shape == (7,)
  with pytest.raises(ValueError, match='too big'):
    dropout.draws(key, (2**16, 2**16, 2))  # 2^32 rows.


def test_draws_are_uniform_and_independent_across_neighbours_rows_and_calls():
  draws = np.asarray(dropout.draws(jax.random.key(0), (64, 128, 128))).astype(np.int64)
  n = draws.size  # 2^20.
  # Every bit of the 16 is a fair coin: 4 sigma of a binomial over 2^20 draws.
  bits = (draws[..., None] >> np.arange(16)) & 1
  assert np.abs(bits.mean(axis=(0, 1, 2)) - 0.5).max() < 4 * 0.5 / np.sqrt(n)
  # The top 6 bits fill 64 buckets evenly (chi-square, 63 degrees of freedom: p < 1e-4
  # beyond 120).
  counts = np.bincount((draws >> 10).ravel(), minlength=64)
  assert ((counts - n / 64) ** 2 / (n / 64)).sum() < 120

  def correlation(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]

  # Neighbours along the last axis and across rows, the same position in two calls
  # (the next layer's key) and in the next row block: uncorrelated to 5 sigma.
  other = np.asarray(dropout.draws(jax.random.key(1), draws.shape)).astype(np.int64)
  pairs = [
    (draws[..., 1:], draws[..., :-1]),
    (draws[:, 1:], draws[:, :-1]),
    (draws[1:], draws[:-1]),
    (draws, other),
  ]
  for a, b in pairs:
    assert abs(correlation(a, b)) < 5 / np.sqrt(a.size)
  # Masks at a rate of 0.1: two calls drop the same element at chance (0.01).
  both = np.mean((draws < 6554) & (other < 6554))
  assert abs(both - 0.01) < 5 * np.sqrt(0.01 * 0.99 / n)


def test_the_realized_rate_and_an_exact_expectation():
  x = jnp.ones((64, 128, 128), jnp.float32)  # 2^20 elements.
  out = np.asarray(dropout.apply(x, 0.1, jax.random.key(0)))
  dropped = float(np.mean(out == 0))
  sigma = np.sqrt(0.1 * 0.9 / out.size)
  assert abs(dropped - 6554 / 65536) < 4 * sigma, dropped
  kept = out[out != 0]
  np.testing.assert_allclose(kept, 65536 / (65536 - 6554), rtol=1e-6)
  assert abs(out.mean() - 1.0) < 4 * sigma / 0.9  # Inverted dropout: E[out] = x.
  # bfloat16 activations keep their dtype.
  assert dropout.apply(x.astype(jnp.bfloat16), 0.1, jax.random.key(0)).dtype == jnp.bfloat16
  assert dropout.apply(x, 0.0, jax.random.key(0)) is x


def test_masks_are_deterministic_and_the_same_on_any_device_layout():
  key, shape = jax.random.key(5), (8, 16, 33)
  mask = np.asarray(dropout.keep_mask(key, 0.25, shape))
  np.testing.assert_array_equal(mask, np.asarray(dropout.keep_mask(key, 0.25, shape)))
  assert (mask != np.asarray(dropout.keep_mask(jax.random.key(6), 0.25, shape))).any()
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  sharded = jax.jit(
    lambda k: dropout.keep_mask(k, 0.25, shape),
    out_shardings=NamedSharding(mesh, PartitionSpec('data')),
  )(key)
  assert len(sharded.sharding.device_set) == jax.device_count() == 8
  np.testing.assert_array_equal(np.asarray(sharded), mask)


def test_the_module_draws_from_the_dropout_stream_only_when_training():
  x = jnp.ones((4, 8))
  layer = dropout.Dropout(0.5)
  assert layer.apply({}, x, deterministic=True) is x
  assert dropout.Dropout(0.0).apply({}, x, deterministic=False) is x
  key = jax.random.key(1)
  out = layer.apply({}, x, deterministic=False, rngs={'dropout': key})
  stream = nn.apply(lambda bound: bound.make_rng('dropout'), layer)({}, rngs={'dropout': key})
  np.testing.assert_array_equal(np.asarray(out), np.asarray(dropout.apply(x, 0.5, stream)))
