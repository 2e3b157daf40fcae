"""Dropout whose random draws cost a fraction of `jax.random.bernoulli`'s.

`jax.random.bernoulli` draws a 32-bit word per element: partitionable threefry hashes
every element's index through 20 rounds, which on a CPU costs about ten times the matmul
an attention-probability mask guards (a [32, 12, 128, 128] mask: 50 ms against 5 ms for
QK^T; bench/finetune_vs_torch.py). Here each 32-bit word gives 32 / BITS draws of BITS
bits: words [..., ceil(n * BITS / 32)] over the last axis, unpacked to draws [..., n]; an
element is dropped when its draw is below round(rate x 2^BITS), so the realized rate is
that over 2^BITS (0.1 -> 6554 / 65536 = 0.100006 at 16 bits) and kept values are scaled by
2^BITS / (2^BITS - that), which keeps the expectation exact. The draws depend on (key,
shape) alone, as jax.random's do: the same on every device layout (threefry hashes global
indices), on every run, and after a resume (the trainer derives the key from (seed,
step)).
"""

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


def draws(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 [shape] draws of BITS random bits each, 32 / BITS from each threefry word."""
  per_word = 32 // BITS
  if not shape:
    return jax.random.bits(key, (), jnp.uint32) & (LEVELS - 1)
  n = shape[-1]
  words = jax.random.bits(key, (*shape[:-1], -(-n // per_word)), jnp.uint32)
  parts = [(words >> (BITS * i)) & (LEVELS - 1) for i in range(per_word)]
  return jnp.stack(parts, -1).reshape(*shape[:-1], -1)[..., :n]


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
