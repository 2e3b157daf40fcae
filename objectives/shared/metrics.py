"""Shared loss pieces: weighted cross-entropy and `(sum, weight)` metrics.

Metrics are `(sum, weight)` pairs so that averages stay exact when summed over
hosts, microbatches and eval batches; `summarize` divides at the very end.
"""

import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, tuple[jax.Array, jax.Array]]


def token_cross_entropy(logits, targets, weights) -> tuple[jax.Array, Metrics]:
  """Mean cross-entropy over weighted positions, with loss and accuracy metrics.

  Args:
    logits: [batch, length, vocab] (any float dtype; computed in float32).
    targets: [batch, length] int ids.
    weights: [batch, length] 0/1 (or real) weights of the positions that count.

  Returns:
    (loss, metrics): loss is the weighted mean; metrics hold `loss` and
    `accuracy` as (sum, weight).
  """
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [batch, length]
  total = jnp.sum(weights)
  loss_sum = jnp.sum(xent * weights)
  correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)
  loss = loss_sum / jnp.where(total > 0, total, 1.0)
  return loss, {'loss': (loss_sum, total), 'accuracy': (correct, total)}


def add(a: Metrics, b: Metrics) -> Metrics:
  return jax.tree.map(jnp.add, a, b)


def summarize(metrics) -> dict[str, float]:
  """{name: sum / weight} as Python floats (0.0 where the weight is 0)."""
  out = {}
  for name, (total, weight) in metrics.items():
    total, weight = float(total), float(weight)
    out[name] = total / weight if weight else 0.0
  return out
