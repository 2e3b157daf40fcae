"""Whole-word masking (Google's BERT wwm release; Chinese-BERT-wwm with a segmenter).

As objectives/mlm.py, but the unit of selection is the word (data/word_units.py):
each candidate word is selected with probability `mask_rate`, so every token is
covered with probability `mask_rate`; the [MASK] / random / kept choice
(80/10/10) is drawn once per word, so a word is either wholly masked, wholly
randomized or wholly kept. Draws are taken at the word's first position, from
host_random, so they depend only on (seed, epoch, example id).

The loss is MLM's (objectives/shared/token_lm.py).
"""

import numpy as np
from ml_collections import config_dict

from data import word_units
from objectives import mlm
from objectives.shared import token_lm

FRAMING = mlm.FRAMING
SHOW = 'masked'
# The objective API's eval figures and loss: token_lm's.
eval_summary = token_lm.eval_summary
loss_fn = token_lm.loss_fn
# Only the masked positions reach the vocabulary (objectives/mlm.py).
predicted_length = mlm.predicted_length
build_model = mlm.build_model


def config() -> config_dict.ConfigDict:
  """Whole-word masking's keys (also read by MacBERT and ERNIE)."""
  c = config_dict.ConfigDict()
  c.word_segmenter = ''  # '' (words are pieces' words) or 'jieba' (Chinese words).
  return c


def make_masker(objective_cfg, tokenizer, seed: int):
  """Returns `mask(batch) -> (inputs, selected)` with whole words as units.

  `batch['word_starts']` [batch, length] bool, when the loader supplies it (a
  pre-segmented corpus), replaces the starts derived from the pieces.
  `objective_cfg.word_segmenter == 'jieba'` segments Chinese characters with jieba.
  """
  starts = word_units.make_word_starts(objective_cfg, tokenizer)

  def unit_starts(batch: dict) -> np.ndarray:
    """The first position of each position's word [batch, length]."""
    return word_units.word_start_positions(starts(batch))

  return mlm.make_masker(objective_cfg, tokenizer, seed, unit_starts)


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` turning packed rows into whole-word MLM inputs."""
  mask = make_masker(objective_cfg, tokenizer, seed)

  def preprocess(batch: dict) -> dict:
    inputs, selected = mask(batch)
    return mlm.model_batch(objective_cfg, batch, inputs, selected)

  return preprocess
