"""What the meta-learning objectives share (objectives/prototypical.py, fomaml.py): an
episode's row, its sentence embeddings, prototypes and the query loss.

An episode (data/episodes.py) is one loader row holding all its N (K + Q) records, so a
batch is [episodes, records, length]: 'inputs' (token ids), 'segment_ids', 'positions',
'token_types' [E, M, L], 'onehot' [E, M, N] (each record's class position in its episode), 'query' [E,
M] (1 for a query record, 0 for support) and 'example_id' [E] (-1 on the loader's eval
padding episodes, whose arrays are all zeros).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data import tasks
from models import heads

ROW_INPUTS = ('tokens', 'segment_ids', 'positions', 'token_types')
POOLINGS = ('mean', 'cls')
BATCH_NAME = {'tokens': 'inputs'}  # A batch's token ids are 'inputs', as every objective's.


def episode_row(item: dict, tokenizer, seq_len: int) -> dict:
  """The row of an episode from the loader's stream item {'text': episode, 'epoch', 'doc'}."""
  episode = item['text']
  encoded = [
    tasks.encode_pair(tokenizer, r['text_a'], r['text_b'], seq_len) for r in episode['records']
  ]
  row = {name: np.stack([e[name] for e in encoded]) for name in ROW_INPUTS}  # [M, L] each.
  ways = len(episode['classes'])
  return dict(
    row,
    onehot=np.eye(ways, dtype=np.float32)[episode['labels']],  # [M, N]
    query=np.asarray(episode['query'], np.float32),  # [M]
    epoch=np.int64(item['epoch']),
    example_id=np.int64(item['doc']),
  )


def make_rows(objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
  """One row per episode."""
  del objective_cfg, docs, unused
  return stream.map(lambda item: episode_row(item, tokenizer, seq_len))


def check_pooling(pooling: str) -> None:
  if pooling not in POOLINGS:
    raise ValueError(f'objective.pooling={pooling!r} is not one of {POOLINGS}.')


def make_preprocess(objective_cfg, tokenizer, seed: int):
  del objective_cfg, tokenizer, seed
  return lambda rows: {
    **{BATCH_NAME.get(name, name): rows[name].astype(np.int32) for name in ROW_INPUTS},
    'onehot': rows['onehot'].astype(np.float32),
    'query': rows['query'].astype(np.float32),
    'example_id': rows['example_id'].astype(np.int32),
  }


def embed(params, batch: dict, rng, model, pooling: str):
  """[E, M, embed] sentence embeddings of every record of the batch's episodes: the
  encoder's final states averaged over the real tokens ('mean') or its first ([CLS])."""
  e, m, length = batch['inputs'].shape
  flat = [batch[BATCH_NAME.get(name, name)].reshape(e * m, length) for name in ROW_INPUTS]
  states, _ = model.apply(
    {'params': params},
    *flat,
    deterministic=rng is None,
    rngs=None if rng is None else {'dropout': rng},
  )  # [E * M, L, embed]
  states = states.astype(jnp.float32)
  if pooling == 'cls':
    pooled = states[:, 0]
  else:
    real = (flat[1] > 0).astype(jnp.float32)[..., None]  # [E * M, L, 1]
    pooled = jnp.sum(states * real, 1) / jnp.maximum(jnp.sum(real, 1), 1.0)
  return pooled.reshape(e, m, -1)


def prototypes(embeddings, onehot, query):
  """[E, N, embed]: each class's mean support embedding."""
  support = onehot * (1.0 - query)[..., None]  # [E, M, N]
  sums = jnp.einsum('emn,emd->end', support, embeddings)
  return sums / jnp.maximum(jnp.sum(support, 1), 1.0)[..., None]


def distance_logits(embeddings, centres):
  """[E, M, N]: minus the squared Euclidean distance of every record to every centre."""
  return -jnp.sum(jnp.square(embeddings[:, :, None, :] - centres[:, None, :, :]), -1)


def real_episodes(batch) -> jnp.ndarray:
  """[E] 1.0 for a real episode, 0.0 for the loader's padding."""
  return (batch['segment_ids'][:, 0, 0] > 0).astype(jnp.float32)


def query_loss(logits, batch):
  """(mean query cross-entropy over the real episodes, {'loss', 'accuracy'} as (sum, weight))
  of [E, M, N] logits."""
  weights = batch['query'] * real_episodes(batch)[:, None]  # [E, M]
  labels = jnp.argmax(batch['onehot'], -1)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  total = jnp.sum(weights)
  loss_sum = jnp.sum(losses * weights)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
  loss = loss_sum / jnp.maximum(total, 1.0)
  return loss, {'loss': (loss_sum, total), 'accuracy': (correct, total)}


class EpisodicObjective:
  """The parts of an episodic objective that do not depend on its loss: the encoder as
  the model, one row per episode, the batch arrays (objectives/prototypical.py, fomaml.py)."""

  FRAMING = ('cls_id', 'sep_id')
  SHOW = 'episodes'

  def build_model(self, model_cfg):
    return heads.Backbone(model_cfg)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    return make_rows(objective_cfg, stream, docs, tokenizer, seq_len=seq_len)

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    return make_preprocess(objective_cfg, tokenizer, seed)

  def eval_summary(self, values: dict) -> dict:
    return values


def split_rng(rng, count: int):
  """`count` keys from `rng`, or Nones (evaluation: no dropout)."""
  return [None] * count if rng is None else list(jax.random.split(rng, count))
