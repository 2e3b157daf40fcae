"""training/integrity.py's leaf digest: small leaves hashed on the host by NumPy give the
device program's words bit for bit (so either path verifies the other's checkpoints),
for every element size, NaNs flagged; a sharded leaf gives the same words as its host copy."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from training import integrity

DTYPES = (np.float32, ml_dtypes.bfloat16, np.float16, np.int32, np.uint32, np.int8, np.uint8,
          np.bool_)  # fmt: skip


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: np.dtype(d).name)
def test_host_and_device_digests_agree_for_every_element_size(dtype):
  rng = np.random.default_rng(0)
  for shape in ((), (7,), (3, 5, 4)):
    x = (rng.normal(size=shape) * 100).astype(dtype)
    host_words, host_finite = integrity._host_digest(np.asarray(x))
    device_words, device_finite = jax.device_get(integrity._LEAF_DIGEST(jnp.asarray(x)))
    np.testing.assert_array_equal(host_words, device_words)
    assert host_finite == bool(device_finite) is True
  if np.issubdtype(np.dtype(dtype), np.floating) or dtype is ml_dtypes.bfloat16:
    bad = np.array([1.0, np.nan, 2.0], dtype)
    assert integrity._host_digest(bad)[1] is False
    assert not bool(jax.device_get(integrity._LEAF_DIGEST(jnp.asarray(bad)))[1])


def test_the_record_is_the_same_whichever_path_hashes_a_leaf(monkeypatch):
  mesh = jax.make_mesh((8,), ('data',))
  big = np.arange(2 * integrity.HOST_DIGEST_MAX, dtype=np.float32).reshape(-1, 8)
  small = np.linspace(-1, 1, 96, dtype=np.float32).reshape(16, 6)
  state = {
    'small': small,
    'sharded': jax.device_put(small, NamedSharding(mesh, PartitionSpec('data'))),
    'big': big,
    'step': np.int32(7),
  }
  assert integrity._hashed_on_host(small) and not integrity._hashed_on_host(big)
  record, nonfinite = integrity.state_record(state)
  assert record['small'] == record['sharded'] and nonfinite == []
  monkeypatch.setattr(integrity, 'HOST_DIGEST_MAX', -1)  # Everything on the devices.
  assert integrity.state_record(state) == (record, [])
