"""TransE's fitting loop (Bordes et al. 2013): entity and relation vectors of a knowledge
graph's triples, for tools/transe.py (ERNIE-THU's entity vectors). The distance, the loss
and the negatives are objectives/shared/transe.py's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from objectives.shared import transe


def train(triples: np.ndarray, num_entities: int, num_relations: int, *, dim: int, steps: int,
          batch_size: int, learning_rate: float, margin: float, norm: int, seed: int):  # fmt: skip
  """(entity vectors [E, dim], relation vectors [R, dim], the last step's loss)."""
  bound = 6.0 / np.sqrt(dim)
  rng = np.random.default_rng(seed)
  relations = rng.uniform(-bound, bound, (num_relations, dim)).astype(np.float32)
  relations /= np.linalg.norm(relations, axis=-1, keepdims=True)
  params = {
    'entities': jnp.asarray(rng.uniform(-bound, bound, (num_entities, dim)), jnp.float32),
    'relations': jnp.asarray(relations),
  }
  tx = optax.adam(learning_rate)
  state = tx.init(params)

  def loss_fn(p, positive, negative):
    e = p['entities'] / jnp.linalg.norm(p['entities'], axis=-1, keepdims=True)
    d = lambda t: transe.distance(e[t[:, 0]], p['relations'][t[:, 1]], e[t[:, 2]], norm)  # noqa: E731
    return transe.margin_loss(d(positive), d(negative), margin)

  @jax.jit
  def step(p, opt_state, positive, negative):
    loss, grads = jax.value_and_grad(loss_fn)(p, positive, negative)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  loss = jnp.float32(0.0)
  for i in range(steps):
    batch = triples
    if batch_size and batch_size < len(triples):
      batch = triples[np.random.default_rng([seed, i, 1]).choice(len(triples), batch_size, False)]
    negative = transe.corrupt(batch, num_entities, seed, i)
    params, state, loss = step(params, state, jnp.asarray(batch), jnp.asarray(negative))
  entities = np.array(params['entities'])
  entities /= np.linalg.norm(entities, axis=-1, keepdims=True)
  return entities, np.asarray(params['relations']), float(loss)


def tail_ranks(entities, relations, triples: np.ndarray, norm: int) -> np.ndarray:
  """[n] the rank (1 = best) of each triple's true tail among all entities."""
  scores = transe.distance(
    entities[triples[:, 0]][:, None], relations[triples[:, 1]][:, None], entities[None], norm
  )  # [n, entities]
  true = np.asarray(scores)[np.arange(len(triples)), triples[:, 2]]
  return 1 + np.sum(np.asarray(scores) < true[:, None], axis=1)
