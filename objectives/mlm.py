"""Masked language modelling (BERT), with dynamic masking (RoBERTa).

Host side, vectorized over the batch: each non-special token is selected with
probability `mask_rate` (15%); a selected token becomes [MASK] with probability
`mask_token_rate` (80%), a random non-special token with `random_token_rate`
(10%), and stays unchanged otherwise. The draws are a function of
(seed, epoch, example id, position), so every epoch masks afresh and a restored
run masks exactly as the uninterrupted one. With `dupe_factor` = k > 0 the masks
are static as in the original BERT data generation, which wrote k masked copies
of the corpus and cycled over them: a token's draws are a function of (seed,
epoch mod k, its document, its offset), so epoch e and e + k mask the same
tokens the same way however the rows are packed.

Jitted side: cross-entropy over the selected positions only.
"""

import math

import numpy as np
from ml_collections import config_dict

from data import host_random
from models import heads
from objectives.shared import token_lm

# Each packed segment is framed as [CLS] tokens [SEP], as in BERT.
FRAMING = ('cls_id', 'sep_id')
# How `python -m tools.show` renders a row: corrupted positions marked against the original.
SHOW = 'masked'
# The objective API's eval figures and loss: token_lm's.
eval_summary = token_lm.eval_summary
loss_fn = token_lm.loss_fn


def config() -> config_dict.ConfigDict:
  """MLM's keys of `config.objective` (configs/base.py merges every objective's)."""
  c = config_dict.ConfigDict()
  c.mask_rate = 0.15  # Fraction of non-special tokens selected for prediction.
  c.mask_token_rate = 0.8  # Of the selected, fraction replaced by [MASK].
  c.random_token_rate = 0.1  # Of the selected, fraction replaced by a random token.
  c.dupe_factor = 0  # Static masks cycled over this many copies (BERT); 0: dynamic.
  c.max_predictions_per_seq = 0  # Masked positions gathered per row before the vocabulary
  # projection (BERT: 20 at 128, 80 at 512); 0 sizes it from mask_rate so that a row
  # overflows with probability < 1e-4 (overflow is cut and logged); -1 predicts at every
  # position (no gather).
  return c


def max_predictions(objective_cfg, length: int) -> int:
  """Masked positions gathered per row of `length` tokens (0: none, every position).

  The automatic size is mean + 4 standard deviations of the Binomial(length, mask_rate)
  count of selected tokens, plus one: at 128 tokens and 15%, 37 of 128 positions
  (BERT's fixed 20 fits its exactly-15% masking; ours draws each token independently).
  """
  configured = objective_cfg.max_predictions_per_seq
  if configured < -1:
    raise ValueError(
      f'objective.max_predictions_per_seq={configured}: use a count, 0 (sized from '
      'mask_rate) or -1 (every position).'
    )
  if configured == -1:
    return 0
  if configured > 0:
    return min(configured, length)
  rate = objective_cfg.mask_rate
  mean = length * rate
  return min(length, math.ceil(mean + 4 * math.sqrt(mean * (1 - rate))) + 1)


def predicted_length(objective_cfg, seq_len: int) -> int:
  """Positions per row that reach the vocabulary projection (objectives/api.py)."""
  return max_predictions(objective_cfg, seq_len) or seq_len


def build_model(model_cfg):
  """The model this objective trains: the stack with BERT's MLM head."""
  return heads.MaskedLM(model_cfg)


def make_masker(objective_cfg, tokenizer, seed: int, unit_starts=None):
  """Returns `mask(batch) -> (inputs, selected)`: BERT's corruption of packed rows.

  `selected` [batch, length] marks the chosen positions; `inputs` has them
  replaced by [MASK], a random ordinary token, or left as they were.
  `unit_starts(batch)` ([batch, length] ints), when given, maps each position to
  the first position of its unit (whole-word masking, objectives/wwm.py): the
  selection and the [MASK] / random / kept choice are drawn there, once per unit.
  """
  rates = (objective_cfg.mask_rate, objective_cfg.mask_token_rate, objective_cfg.random_token_rate)
  mask_rate, mask_token_rate, random_token_rate = rates
  if not 0.0 < mask_rate < 1.0:
    raise ValueError(f'objective.mask_rate={mask_rate} must be in (0, 1).')
  if min(mask_token_rate, random_token_rate) < 0 or mask_token_rate + random_token_rate > 1:
    raise ValueError(
      f'objective.mask_token_rate={mask_token_rate} and random_token_rate={random_token_rate}'
      ' must be >= 0 and sum to at most 1.'
    )
  dupe_factor = objective_cfg.dupe_factor
  if dupe_factor < 0:
    raise ValueError(f'objective.dupe_factor={dupe_factor} must be >= 0 (0: dynamic masking).')
  special_ids = np.asarray(tokenizer.special_ids)
  # Random replacements come from the ordinary vocabulary only.
  replacement_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), special_ids).astype(np.int32)

  def mask(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    length = tokens.shape[1]
    draw = lambda stream: host_random.uniform(  # noqa: E731
      seed, batch['epoch'], batch['example_id'], length, stream
    )
    if dupe_factor:  # Static: the draws follow the token through dupe_factor fixed copies.
      if 'token_keys' not in batch:
        raise ValueError(
          'objective.dupe_factor needs rows that say where each token comes from '
          "('token_keys', from the loader's packing); this objective's rows do not."
        )
      copy = np.asarray(batch['epoch']) % dupe_factor
      draw = lambda stream: host_random.uniform_keyed(seed, copy, batch['token_keys'], stream)  # noqa: E731
    if unit_starts is None:
      per_unit = draw
    else:
      first, rows = unit_starts(batch), np.arange(tokens.shape[0])[:, None]
      per_unit = lambda stream: draw(stream)[rows, first]  # noqa: E731
    candidates = (segment_ids > 0) & ~np.isin(tokens, special_ids)
    selected = candidates & (per_unit(0) < mask_rate)
    action = per_unit(1)
    to_mask = selected & (action < mask_token_rate)
    to_random = selected & (action >= mask_token_rate)
    to_random &= action < mask_token_rate + random_token_rate
    random_ids = replacement_ids[
      np.minimum((draw(2) * len(replacement_ids)).astype(np.int64), len(replacement_ids) - 1)
    ]
    inputs = np.where(to_mask, tokenizer.mask_id, np.where(to_random, random_ids, tokens))
    return inputs, selected

  return mask


def model_batch(objective_cfg, rows: dict, inputs, selected) -> dict:
  """The model batch of a masked LM: the corrupted `inputs`, the original tokens as
  targets at the `selected` positions, those positions gathered (`max_predictions`).
  Every MLM-family objective ends its preprocessing here."""
  return token_lm.model_batch(
    rows,
    inputs=inputs,
    targets=rows['tokens'],
    weights=selected,
    max_predictions=max_predictions(objective_cfg, rows['tokens'].shape[1]),
  )


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` turning packed rows into MLM inputs."""
  mask = make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    inputs, selected = mask(batch)
    return model_batch(objective_cfg, batch, inputs, selected)

  return preprocess
