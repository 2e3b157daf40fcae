"""models/dropout.py: 16-bit draws unpacked from threefry words by hand, the realized rate
and the exact expectation, determinism and the same mask on any device layout."""

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


def test_draws_are_the_halves_of_threefry_words_by_hand():
  key = jax.random.key(3)
  got = np.asarray(dropout.draws(key, (3, 5)))
  words = np.asarray(jax.random.bits(key, (3, 3), jnp.uint32))  # ceil(5 / 2) words a row.
  expected = np.stack([words & 0xFFFF, words >> 16], -1).reshape(3, 6)[:, :5]
  np.testing.assert_array_equal(got, expected)
  assert got.max() < 65536 and dropout.draws(key, ()).shape == ()


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
  key, shape = jax.random.key(5), (8, 16, 33)  # An odd last axis: a half word is cut.
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
