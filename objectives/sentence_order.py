"""Next sentence prediction (BERT) and sentence order prediction (ALBERT).

An auxiliary objective (objectives/multitask.py): BERT trains MLM + NSP and
ALBERT MLM + SOP on the same sentence-pair rows,

  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.mlm:1.0,objectives.sentence_order:1.0'
  c.objective.pair_kind = 'nsp'  # or 'sop'
  c.objective.short_seq_prob = 0.1

The rows are built by data/sentence_pairs.py as Google's create_pretraining_data
builds them (target length, short-sequence probability, random split, random
next document or swapped order); the head is heads.SentencePairHead on the
pooled [CLS] state; the loss is the mean two-way cross-entropy over real rows.
"""

import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

AUX_HEAD = 'sentence_pair'


def config() -> config_dict.ConfigDict:
  """NSP / SOP's keys."""
  c = config_dict.ConfigDict()
  c.pair_kind = 'nsp'  # 'nsp' (BERT: random next segment) or 'sop' (ALBERT: swapped).
  c.short_seq_prob = 0.1  # Probability of a shorter target length for a pair (BERT).
  return c


def make_rows(objective_cfg, stream, docs, tokenizer, *, seq_len, seed, shard, num_shards):
  """The loader's rows: one [CLS] A [SEP] B [SEP] pair per row (data/sentence_pairs.py)."""
  from data import sentence_pairs  # Grain: imported only by the input pipeline, not the train step.

  return sentence_pairs.sentence_pair_rows(
    stream,
    docs,
    tokenizer,
    kind=objective_cfg.pair_kind,
    seq_len=seq_len,
    short_seq_prob=objective_cfg.short_seq_prob,
    seed=seed,
    shard_index=shard,
    num_shards=num_shards,
  )


def make_aux_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `extra(rows, batch) -> {'pair_labels'}`: the labels the rows were built with."""
  del objective_cfg, tokenizer, seed  # Drawn when the rows were built.

  def extra(rows: dict, batch: dict) -> dict:
    del batch
    if 'pair_labels' not in rows:
      raise ValueError(
        'objectives.sentence_order needs sentence-pair rows: list it in objective.parts '
        '(objectives/multitask.py), which builds them with data/sentence_pairs.py.'
      )
    return {'pair_labels': np.asarray(rows['pair_labels'], np.int32)}

  return extra


def aux_loss(logits, batch, objective_cfg):
  """Mean cross-entropy of the [batch, 2] pair logits over rows that hold a pair."""
  del objective_cfg
  logits = logits.astype(jnp.float32)
  labels = batch['pair_labels']  # [batch]
  real = jnp.any(batch['segment_ids'] > 0, axis=-1).astype(jnp.float32)  # Eval pads rows.
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  total = jnp.sum(real)
  loss = jnp.sum(xent * real) / jnp.maximum(total, 1.0)
  return loss, {'loss': (jnp.sum(xent * real), total), 'accuracy': (jnp.sum(correct * real), total)}
