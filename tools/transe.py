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

import numpy as np
from absl import app, flags

from data import knowledge
from training import transe

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


def main(argv):
  del argv
  graph = knowledge.read_triples(_KNOWLEDGE.value)
  names, relation_names, triples = knowledge.entity_ids(graph)
  if not len(triples):
    raise ValueError(f'{_KNOWLEDGE.value} holds no triples.')
  entities, relations, loss = transe.train(
    triples, len(names), len(relation_names), dim=_DIM.value, steps=_STEPS.value,
    batch_size=_BATCH.value, learning_rate=_LR.value, margin=_MARGIN.value, norm=_NORM.value,
    seed=_SEED.value,
  )  # fmt: skip
  ranks = transe.tail_ranks(entities, relations, triples, _NORM.value)
  print(f'TransE over {len(triples)} triples, {len(names)} entities, {len(relation_names)} '
        f'relations: loss {loss:.4f}, tail mean rank {ranks.mean():.2f}, hits@10 '
        f'{np.mean(ranks <= 10):.3f}; written to {_OUT.value}')  # fmt: skip
  knowledge.write_entity_vectors(_OUT.value, names, entities, relation_names, relations)


if __name__ == '__main__':
  app.run(main)
