"""UniLM (Dong et al. 2019): one shared encoder, a cloze task under four attention masks.

Each packed segment draws one language-modelling kind, in the paper's proportions
(section 2.3) by default:

  bidirectional (1/3): every token sees the whole segment (BERT's MLM);
  left-to-right (1/6) and right-to-left (1/6): a token sees itself and the tokens
    on one side of it (together the paper's unidirectional third);
  sequence-to-sequence (1/3): the segment is split into a source ([CLS] and a
    prefix of the text) and a target (the rest and [SEP]); source tokens see the
    whole source only, target tokens the source and the target up to themselves.

Every kind trains the same cloze task: objectives/mlm.py's masker (15% of the
ordinary tokens; 80% [MASK], 10% random, 10% kept) over all positions, source
and target alike, each masked token predicted from what its mask lets it see
(itself, as [MASK], included). The loss is MLM's cross-entropy over the masked
positions; metrics also report it per kind (`loss_<kind>`).

The host ships per-position attention kinds (models/attention.py
`attention_kinds_mask`), from which the encoder builds the mask on device. Where
UniLM pairs two text spans ([SOS] S1 [EOS] S2 [EOS]), packed text is split inside
each segment here, after 1 + floor(u (L - 1)) of its L text tokens
(objectives/prefix_lm.py `split`), with no separator between source and target;
the target takes token type 1, BERT's second segment. UniLM's release also gives
each kind segment embeddings of its own (six token types); the presets have two,
so here only the mask tells the kinds apart.

Host randomness: the masker draws streams 0-2 at every column; the split draws
stream 0 and the kind stream 3, both at the segment's [CLS] column, which the
masker never selects, so the three choices are independent.
"""

import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from data import host_random
from models import attention
from objectives import mlm, prefix_lm
from objectives.shared import metrics, token_lm

FRAMING = mlm.FRAMING
SHOW = 'masked'
# The objective API's eval figures: token_lm's.
eval_summary = token_lm.eval_summary
build_model = mlm.build_model

# The LM kinds, in the order of `lm_kinds` values and of the config's rates.
KINDS = ('bidirectional', 'left_to_right', 'right_to_left', 'seq2seq')
BIDIRECTIONAL_LM, LEFT_TO_RIGHT_LM, RIGHT_TO_LEFT_LM, SEQ2SEQ_LM = range(len(KINDS))
# The attention kind of each LM kind's positions; a seq2seq target reads left to right.
_BI, _L2R, _R2L = attention.BIDIRECTIONAL, attention.LEFT_TO_RIGHT, attention.RIGHT_TO_LEFT
_ATTENTION = np.array([_BI, _L2R, _R2L, _BI], np.int32)  # By KINDS index.
_KIND_STREAM = 3


def config() -> config_dict.ConfigDict:
  """UniLM's keys: the fraction of segments trained as each LM (the paper's)."""
  c = config_dict.ConfigDict()
  c.bidirectional_rate = 1 / 3  # Bidirectional (MLM) segments.
  c.left_to_right_rate = 1 / 6  # Left-to-right segments.
  c.right_to_left_rate = 1 / 6  # Right-to-left segments.
  c.seq2seq_rate = 1 / 3  # Sequence-to-sequence segments.
  return c


def kind_rates(objective_cfg) -> np.ndarray:
  """The probabilities of KINDS from `objective.<kind>_rate` (defaults: the paper's)."""
  rates = np.array([float(objective_cfg[f'{k}_rate']) for k in KINDS])
  if rates.min() < 0 or abs(rates.sum() - 1) > 1e-6:
    shown = ', '.join(f'objective.{k}_rate={r:g}' for k, r in zip(KINDS, rates, strict=True))
    raise ValueError(f'{shown}: the rates must be >= 0 and sum to 1.')
  return rates


def segment_kinds(batch: dict, rates: np.ndarray, seed: int) -> np.ndarray:
  """The LM kind of each position's segment [batch, length] (-1 on padding)."""
  segment_ids, positions = batch['segment_ids'], batch['positions']  # [batch, length]
  length = segment_ids.shape[1]
  start = np.clip(np.arange(length)[None, :] - positions, 0, length - 1)  # The [CLS] column.
  u = host_random.uniform(seed, batch['epoch'], batch['example_id'], length, _KIND_STREAM)
  u = np.take_along_axis(u, start, axis=1)  # One draw per segment.
  kinds = np.searchsorted(np.cumsum(rates)[:-1], u, side='right')
  return np.where(segment_ids > 0, kinds, -1).astype(np.int32)


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch`: MLM inputs plus each position's kinds.

  Besides token_lm's arrays the batch holds `token_types` (1 on seq2seq targets),
  `attention_kinds` (what the encoder's mask is built from) and `lm_kinds`
  (KINDS index of the position's segment, -1 on padding), all [batch, length].
  """
  rates = kind_rates(objective_cfg)
  mask = mlm.make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    kinds = segment_kinds(batch, rates, seed)
    _, suffix, eos = prefix_lm.split(batch, seed)
    target = (suffix | eos) & (kinds == SEQ2SEQ_LM)
    attention = np.where(target, _L2R, _ATTENTION[np.maximum(kinds, 0)])  # Padding: any.
    inputs, selected = mask(batch)
    out = mlm.model_batch(objective_cfg, batch, inputs, selected)
    out['token_types'] = target.astype(np.int32)
    out['attention_kinds'] = attention.astype(np.int32)
    out['lm_kinds'] = kinds
    return out

  return preprocess


# Only the masked positions reach the vocabulary (objectives/mlm.py).
predicted_length = mlm.predicted_length


def loss_fn(params, batch, rng, *, model):
  """Mean cross-entropy over the masked positions of all kinds; `rng=None` means evaluation."""
  kwargs, targets, weights = token_lm.predictions(batch)
  logits = model.apply(
    {'params': params},
    batch['inputs'],
    batch['segment_ids'],
    batch['positions'],
    batch['token_types'],
    deterministic=rng is None,
    rngs=None if rng is None else {'dropout': rng},
    attention_kinds=batch['attention_kinds'],
    **kwargs,
  )  # [batch, P or length, vocab]
  kinds = batch['lm_kinds']
  if kwargs:  # The kinds of the gathered positions.
    kinds = jnp.take_along_axis(kinds, batch['masked_positions'], axis=1)
  loss, values = metrics.token_cross_entropy(logits, targets, weights)
  for index, name in enumerate(KINDS):  # XLA shares the one log-softmax among these.
    _, by_kind = metrics.token_cross_entropy(logits, targets, weights * (kinds == index))
    values[f'loss_{name}'] = by_kind['loss']
  return loss, {**values, **token_lm.dropped_metric(batch)}
