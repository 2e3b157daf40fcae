"""Counter-based random numbers for host-side corruption, derived, never carried.

Every draw is a pure function of (seed, epoch, example id, stream, position), so a
restored run, another host count or another batch size sees exactly the same
masks for the same example. Vectorized NumPy: one call covers the whole batch.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
  """splitmix64 finalizer: a bijective avalanche on uint64 (wraps modulo 2**64)."""
  x = np.asarray(x, np.uint64)
  with np.errstate(over='ignore'):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def uniform(
  seed: int, epoch: np.ndarray, example_ids: np.ndarray, length: int, stream: int
) -> np.ndarray:
  """Uniform floats in [0, 1), shape [batch, length].

  Args:
    seed: the run's seed.
    epoch: [batch] (or scalar) epoch of each example.
    example_ids: [batch] ids unique within an epoch (or across epochs).
    length: number of draws per example (one per position).
    stream: distinguishes independent draws for the same positions (e.g. the
      selection draw and the replacement draw of MLM).
  """
  example_ids = np.asarray(example_ids, np.int64).astype(np.uint64)
  epoch = np.broadcast_to(np.asarray(epoch, np.int64), example_ids.shape).astype(np.uint64)
  with np.errstate(over='ignore'):
    key = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream))
    key = _mix(key ^ _mix(epoch + _GOLDEN))
    key = _mix(key ^ _mix(example_ids * _GOLDEN + np.uint64(1)))  # [batch]
    bits = _mix(key[:, None] + np.arange(length, dtype=np.uint64)[None, :] * _GOLDEN)
  return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # [batch, length]


def uniform_keyed(seed: int, epoch: np.ndarray, keys: np.ndarray, stream: int) -> np.ndarray:
  """Uniform floats in [0, 1), one per element of `keys` [batch, length] (int64 keys,
  e.g. data/packing.py's token_keys: a token's document and offset), so that a
  draw follows the token wherever the packing puts it."""
  keys = np.asarray(keys, np.int64).astype(np.uint64)
  epoch = np.asarray(epoch, np.int64).astype(np.uint64).reshape(-1, *([1] * (keys.ndim - 1)))
  with np.errstate(over='ignore'):
    key = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream))
    key = _mix(key ^ _mix(epoch + _GOLDEN))  # [batch, 1]
    bits = _mix(key ^ _mix(keys * _GOLDEN + np.uint64(2)))
  return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
