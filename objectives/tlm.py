"""XLM's translation language modelling (TLM; Conneau & Lample 2019, section 3.3).

BERT's masking (objectives/mlm.py: 15%, 80/10/10) over a translation pair read
as one sequence, [CLS] source [SEP] target [SEP], with language embeddings (the
token-type table: 0 for the first column's language, 1 for the second's) and
positions restarting at the target, so that a word masked on one side can be
predicted from its translation on the other. Rows are packed pairs of a
tab-separated parallel corpus (data/parallel_pairs.py, objective.max_pairs per
row). The loss is MLM's cross-entropy over the masked positions; the model is
heads.MaskedLM with the language ids fed as token types.
"""

import numpy as np
from ml_collections import config_dict

from objectives import mlm
from objectives.shared import token_lm

FRAMING = mlm.FRAMING
SHOW = 'masked'
# The objective API's eval figures: token_lm's.
eval_summary = token_lm.eval_summary
build_model = mlm.build_model
MODEL_INPUTS = (*token_lm.MODEL_INPUTS, 'token_types')


def config() -> config_dict.ConfigDict:
  """Translation LM's keys (also the contrastive part's)."""
  c = config_dict.ConfigDict()
  c.max_pairs = 8  # Translation pairs packed per row.
  return c


def make_rows(objective_cfg, stream, docs, tokenizer, *, seq_len, seed, shard, num_shards):
  """Packed translation pairs, each one attention segment (data/parallel_pairs.py)."""
  from data import parallel_pairs  # Grain: imported only by the input pipeline, not the train step.

  del docs, seed  # Read in order; nothing is drawn.
  return parallel_pairs.parallel_pair_rows(
    stream,
    tokenizer,
    joint=True,
    seq_len=seq_len,
    max_pairs=objective_cfg.max_pairs,
    shard_index=shard,
    num_shards=num_shards,
  )


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(rows) -> batch`: MLM over both sides, language ids kept."""
  mask = mlm.make_masker(objective_cfg, tokenizer, seed)

  def preprocess(rows: dict) -> dict:
    inputs, selected = mask(rows)
    batch = mlm.model_batch(objective_cfg, rows, inputs, selected)
    batch['token_types'] = np.asarray(rows['token_types'], np.int32)
    return batch

  return preprocess


# Only the masked positions reach the vocabulary (objectives/mlm.py).
predicted_length = mlm.predicted_length


def loss_fn(params, batch, rng, *, model):
  """MLM's cross-entropy, with the language ids as token types."""
  return token_lm.loss_fn(params, batch, rng, model=model, model_inputs=MODEL_INPUTS)
