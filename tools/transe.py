"""TransE entity and relation vectors from a knowledge file (Bordes et al. 2013), for
ERNIE-THU's entity fusion (objectives/ernie_thu.py, `--config.objective.entity_file`).

  python -m tools.transe --knowledge KG.tsv --out /tmp/entities.npz [--dim 100 --steps 2000]

KG.tsv is data/knowledge.py's triple file; every head and tail is an entity. Vectors start
uniform in +-6/sqrt(dim) (relations normalized once), entities are L2-normalized before
each step, and Adam at `--learning_rate` minimizes the margin ranking loss against one
corrupted triple per true one (head or tail replaced, a function of (seed, step);
objectives/shared/transe.py) over `--batch_size` triples a step (0: all). Prints the loss
and the tail-prediction mean rank and hits@10 over the triples (raw: other true tails
count against it), then writes the .npz atomically. A killed run writes nothing; run it
again (it is deterministic given its flags).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from data import knowledge
from objectives.shared import transe

_KNOWLEDGE = flags.DEFINE_string('knowledge', None, 'Triples, head<TAB>relation<TAB>tail.')
_OUT = flags.DEFINE_string('out', None, 'The .npz of entity and relation vectors.')
_DIM = flags.DEFINE_integer('dim', 100, 'Vector width (ERNIE: 100).')
_STEPS = flags.DEFINE_integer('steps', 2000, 'Optimizer steps.')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Triples a step (0: all of them).')
_LR = flags.DEFINE_float('learning_rate', 0.01, 'Adam learning rate.')
_MARGIN = flags.DEFINE_float('margin', 1.0, 'Margin of the ranking loss.')
_NORM = flags.DEFINE_integer('norm', 1, 'Distance: 1 (L1) or 2 (L2).')
_SEED = flags.DEFINE_integer('seed', 0, 'Initialization, batches and negatives.')
flags.mark_flags_as_required(['knowledge', 'out'])


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
    entities[triples[:, 0]][:, None] + 0.0, relations[triples[:, 1]][:, None], entities[None], norm
  )  # [n, entities]
  true = np.asarray(scores)[np.arange(len(triples)), triples[:, 2]]
  return 1 + np.sum(np.asarray(scores) < true[:, None], axis=1)


def main(argv):
  del argv
  graph = knowledge.read_triples(_KNOWLEDGE.value)
  names, relation_names, triples = knowledge.entity_ids(graph)
  if not len(triples):
    raise ValueError(f'{_KNOWLEDGE.value} holds no triples.')
  entities, relations, loss = train(
    triples, len(names), len(relation_names), dim=_DIM.value, steps=_STEPS.value,
    batch_size=_BATCH.value, learning_rate=_LR.value, margin=_MARGIN.value, norm=_NORM.value,
    seed=_SEED.value,
  )  # fmt: skip
  ranks = tail_ranks(entities, relations, triples, _NORM.value)
  print(f'TransE over {len(triples)} triples, {len(names)} entities, {len(relation_names)} '
        f'relations: loss {loss:.4f}, tail mean rank {ranks.mean():.2f}, hits@10 '
        f'{np.mean(ranks <= 10):.3f}; written to {_OUT.value}')  # fmt: skip
  knowledge.write_entity_vectors(_OUT.value, names, entities, relation_names, relations)


if __name__ == '__main__':
  app.run(main)
