"""A contrastive sentence objective with in-batch negatives, as an auxiliary loss.

Translation ranking (as LaBSE, Feng et al. 2022; the InfoNCE form of SimCSE, Gao
et al. 2021): every source sentence of a batch must pick its own translation
among all the batch's targets, and every target its source, through the
cosine similarity of their mean-pooled final states divided by a temperature
(objective.temperature, 0.05 as SimCSE). It rides on another objective with a
weight (objectives/multitask.py), e.g. MLM over the same sentences:

  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.mlm:1.0,objectives.contrastive:1.0'

Rows are translation pairs encoded apart (data/parallel_pairs.py, separate
mode): attention segments 2k-1 and 2k of a row are the k-th pair's two sides,
so TLM, which attends across the pair, cannot share this forward pass.
"""

import jax
import jax.numpy as jnp
import optax
from ml_collections import config_dict

AUX_HEAD = 'hidden_states'


def config() -> config_dict.ConfigDict:
  """The contrastive translation-ranking part's key."""
  c = config_dict.ConfigDict()
  c.temperature = 0.05  # Softmax temperature of the cosine similarities (SimCSE).
  return c


def make_rows(objective_cfg, stream, docs, tokenizer, *, seq_len, seed, shard, num_shards):
  """Packed translation pairs, each side its own attention segment."""
  from data import parallel_pairs  # Grain: imported only by the input pipeline, not the train step.

  del docs, seed
  return parallel_pairs.parallel_pair_rows(
    stream,
    tokenizer,
    joint=False,
    seq_len=seq_len,
    max_pairs=objective_cfg.max_pairs,
    shard_index=shard,
    num_shards=num_shards,
  )


def make_aux_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `extra(rows, batch) -> {}` after checking the temperature."""
  del tokenizer, seed
  if objective_cfg.temperature <= 0:
    raise ValueError(f'objective.temperature={objective_cfg.temperature} must be > 0.')
  return lambda rows, batch: {}


def aux_loss(states, batch, objective_cfg):
  """Symmetric InfoNCE over the batch's pairs.

  Args:
    states: [batch, length, embed] final states (heads.HiddenStates).
    batch: `segment_ids` [batch, length]; segments 2k-1, 2k are the k-th pair.
    objective_cfg: `max_pairs` per row and `temperature`.
  """
  num_segments = 2 * objective_cfg.max_pairs
  slots = batch['segment_ids'][:, :, None] == jnp.arange(1, num_segments + 1)  # [b, l, slots]
  slots = slots.astype(jnp.float32)
  counts = jnp.sum(slots, axis=1)  # [batch, slots]
  pooled = jnp.einsum('bls,bld->bsd', slots, states.astype(jnp.float32))
  pooled /= jnp.maximum(counts, 1.0)[..., None]  # Mean over each segment's tokens.
  sources = pooled[:, 0::2].reshape(-1, pooled.shape[-1])  # [batch * max_pairs, embed]
  targets = pooled[:, 1::2].reshape(-1, pooled.shape[-1])
  valid = ((counts[:, 0::2] > 0) & (counts[:, 1::2] > 0)).reshape(-1)  # [batch * max_pairs]
  normalize = lambda x: x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-12)  # noqa: E731
  scores = normalize(sources) @ normalize(targets).T / objective_cfg.temperature
  scores = jnp.where(valid[None, :] & valid[:, None], scores, -1e9)  # [pairs, pairs]
  labels = jnp.arange(scores.shape[0])
  weight = valid.astype(jnp.float32)
  xent = optax.softmax_cross_entropy_with_integer_labels(scores, labels)
  xent += optax.softmax_cross_entropy_with_integer_labels(scores.T, labels)
  correct = (jnp.argmax(scores, -1) == labels) & (jnp.argmax(scores, 0) == labels)
  total = jnp.sum(weight)
  loss_sum = jnp.sum(0.5 * xent * weight)
  return loss_sum / jnp.maximum(total, 1.0), {
    'loss': (loss_sum, total),
    'accuracy': (jnp.sum(correct * weight), total),  # Both directions rank the pair first.
  }
