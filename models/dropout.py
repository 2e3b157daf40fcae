"""Dropout whose random draws cost a fraction of `jax.random.bernoulli`'s.

`jax.random.bernoulli` draws a 32-bit threefry word per element: partitionable threefry
hashes every element's index through 20 rounds, which on a CPU costs about ten times the
matmul an attention-probability mask guards (a [32, 12, 128, 128] mask: 50 ms against 5 ms
for QK^T; bench/finetune_vs_torch.py); even two 16-bit draws per threefry word took 27 ms.
Here threefry draws only two 32-bit words per call, the call's seeds s0 and s1 (from the
dropout key, so from (seed, step, layer)), and each element's draw is a keyed hash of its
global position:

  draw[row, j] = top BITS bits of mix(A[row] + C[j]),
  A[row] = mix(row ^ s0),  C[j] = mix(j ^ s1),

with `row` the element's index over the leading axes (flattened) and `j` its index on the
last axis, and `mix` MurmurHash3's 32-bit finalizer (a bijection in which every input bit
flips each output bit with probability about 1/2). A and C are computed once per row and
per column; the per-element work is one add and one `mix` (1.5 ms for that mask). It is
a hash for dropout masks, not a general-purpose generator: two elements in different rows
share a hash input (A[row] + C[j]) with probability 2^-32, and then their draws are equal,
which adds that much to the 2^-16 chance that two independent 16-bit draws are equal;
tests/models/test_dropout.py checks the draws' uniformity, the realized rate and the
independence of neighbouring elements, rows and calls.

An element is dropped when its draw is below round(rate x 2^BITS), so the realized rate is
that over 2^BITS (0.1 -> 6554 / 65536 = 0.100006 at 16 bits) and kept values are scaled by
2^BITS / (2^BITS - that), which keeps the expectation exact. The draws depend on (key,
shape) alone, as jax.random's do: the same on every device layout (positions are global
indices), on every run, and after a resume (the trainer derives the key from (seed,
step)). Shapes with 2^32 or more rows, or a last axis that long, are refused.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

BITS = 16  # Bits per draw: two draws per 32-bit word.
LEVELS = 1 << BITS


def drop_threshold(rate: float) -> int:
  """Draws below this are dropped: round(rate x LEVELS), at least 1 for a rate > 0.

  Raises:
    ValueError: a rate outside [0, 1).
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f'dropout rate {rate} must be in [0, 1).')
  return max(round(rate * LEVELS), 1) if rate > 0 else 0


def _mix(h: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer (fmix32) of uint32 `h`: a bijection with avalanche."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def draws(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 [shape] draws of BITS random bits each: the top BITS of mix(A[row] + C[j])
  (the module doc), from two 32-bit words drawn from `key`."""
  shape = tuple(shape)
  leading, n = shape[:-1], (shape[-1] if shape else 1)
  if math.prod(leading) >= 2**32 or n >= 2**32:
    raise ValueError(f'dropout draws index rows and columns in 32 bits; shape {shape} is too big')
  s0, s1 = jax.random.bits(key, (2,), jnp.uint32)
  row = jnp.zeros(leading, jnp.uint32)  # [leading...]: the flattened index over them.
  stride = 1
  for axis in reversed(range(len(leading))):
    row += jax.lax.broadcasted_iota(jnp.uint32, leading, axis) * jnp.uint32(stride)
    stride *= leading[axis]
  a = _mix(row ^ s0)[..., None]  # [leading..., 1]
  c = _mix(jax.lax.iota(jnp.uint32, n) ^ s1)  # [n]
  out = _mix(a + c) >> (32 - BITS)  # [leading..., n]
  return out.reshape(shape)


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """bool [shape]: True where an element is kept (probability 1 - threshold / LEVELS)."""
  return draws(key, shape) >= drop_threshold(rate)


def keep_scale(rate: float) -> float:
  """1 / the realized keep probability: scales the kept values to an exact expectation."""
  return LEVELS / (LEVELS - drop_threshold(rate))


def apply(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """x with each element zeroed at the realized rate, the rest scaled (inverted dropout)."""
  if rate == 0.0:
    return x
  kept = keep_mask(key, rate, x.shape)
  return jnp.where(kept, x * jnp.asarray(keep_scale(rate), x.dtype), jnp.zeros_like(x))


class Dropout(nn.Module):
  """flax's nn.Dropout with these draws: `rate`, and the 'dropout' rng collection when
  not `deterministic`."""

  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    return apply(x, self.rate, self.make_rng('dropout'))
