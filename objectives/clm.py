"""Causal language modelling (GPT): predict each next token within its segment.

Host side: targets are the inputs shifted left by one; a position counts only
when its next token belongs to the same (non-padding) segment, so packed
documents never predict across their boundary. Segments are framed as
BOS tokens EOS, so the model learns to end a document.
"""

import numpy as np

from models import heads
from objectives.shared import token_lm

FRAMING = ('bos_id', 'eos_id')
# `python -m tools.show` renders the segments as text with their predicted count.
SHOW = 'causal'
# The objective API's eval figures and loss: token_lm's.
eval_summary = token_lm.eval_summary
loss_fn = token_lm.loss_fn


def build_model(model_cfg):
  """The model this objective trains: the causal stack with the tied LM head."""
  return heads.CausalLM(model_cfg)


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` with next-token targets and weights."""
  del objective_cfg, tokenizer, seed  # CLM draws nothing at random.

  def preprocess(batch: dict) -> dict:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    weights = np.zeros(tokens.shape, np.float32)
    weights[:, :-1] = (segment_ids[:, :-1] == segment_ids[:, 1:]) & (segment_ids[:, :-1] > 0)
    return token_lm.model_batch(batch, inputs=tokens, targets=targets, weights=weights)

  return preprocess
