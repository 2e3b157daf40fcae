"""TransE (Bordes et al. 2013): a triple (h, r, t) is plausible when h + r lands near t.

The knowledge-embedding part of the knowledge objectives: tools/transe.py trains entity and
relation vectors with it for ERNIE-THU's entity fusion (objectives/ernie_thu.py), with
negatives that replace the head or the tail of a true triple by a random entity
(`corrupt`) and the margin ranking loss mean(max(0, margin + d(positive) - d(negative)));
KEPLER (objectives/kepler.py) scores entities the encoder embeds from their descriptions
with the same distance and the negative-sampling loss.
"""

import jax
import jax.numpy as jnp
import numpy as np


def distance(heads, relations, tails, norm: int = 1):
  """[...]: |h + r - t| under the L1 (`norm` 1) or L2 norm, of [..., dim] vectors."""
  gap = heads + relations - tails
  if norm == 1:
    return jnp.sum(jnp.abs(gap), -1)
  return jnp.sqrt(jnp.sum(jnp.square(gap), -1) + 1e-12)


def margin_loss(positive, negative, margin: float):
  """The mean of max(0, margin + d(positive) - d(negative)) over [n] distances."""
  return jnp.mean(jnp.maximum(0.0, margin + positive - negative))


def corrupt(triples: np.ndarray, num_entities: int, seed: int, step: int) -> np.ndarray:
  """[n, 3] (head, relation, tail) ids with, per triple, the head or the tail (a coin
  each) replaced by a uniformly drawn entity: a function of (seed, step)."""
  rng = np.random.default_rng([seed, step])
  out = triples.copy()
  replace_head = rng.random(len(triples)) < 0.5
  drawn = rng.integers(0, num_entities, len(triples))
  out[replace_head, 0] = drawn[replace_head]
  out[~replace_head, 2] = drawn[~replace_head]
  return out


def negative_sampling_loss(positive, negative, margin: float, weights):
  """(mean, sum) over the weighted [n] pairs of -log sigmoid(margin - d(positive))
  - log sigmoid(d(negative) - margin): KEPLER's knowledge-embedding loss (after Sun et al.
  2019), one negative per positive."""
  losses = -jax.nn.log_sigmoid(margin - positive) - jax.nn.log_sigmoid(negative - margin)
  total = jnp.sum(losses * weights)
  return total / jnp.maximum(jnp.sum(weights), 1.0), total
