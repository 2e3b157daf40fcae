"""ELMo's bidirectional language modelling: forward and backward LMs over characters.

Host side: the rows keep their token ids as `inputs` (what `tools.show` renders)
and gain `chars` [batch, length, chars], each token's row of the character table
(models/elmo.py `char_table`, built once from the tokenizer's pieces). The
forward LM at position t predicts token t + 1 (`targets`, `weights`), the
backward LM token t - 1 (`backward_targets`, `backward_weights`); a prediction
counts only inside one non-padding segment, so packed documents never predict
across their boundary. Segments are framed as BOS tokens EOS, the paper's
<S> ... </S>. Nothing is drawn at random.

Jitted side: the loss is the mean of both directions' cross-entropies (each
segment makes as many predictions in each direction), as in bilm-tf; the
forward and backward losses are reported apart too.
"""

import math

import jax.numpy as jnp
import numpy as np

from models import elmo
from objectives.shared import metrics, token_lm

FRAMING = ('bos_id', 'eos_id')
# `python -m tools.show` renders the segments as text with their (forward) predicted count.
SHOW = 'causal'


def build_model(model_cfg):
  """The model this objective trains: the ELMo biLM with its softmax."""
  return elmo.ElmoLM(model_cfg)


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` with characters and both directions' targets."""
  del objective_cfg, seed  # No keys of its own; nothing random.
  table = elmo.char_table(tokenizer)  # [vocab, chars]

  def preprocess(batch: dict) -> dict:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    # same[:, t]: tokens t and t + 1 are neighbours in one document.
    same = (segment_ids[:, :-1] == segment_ids[:, 1:]) & (segment_ids[:, :-1] > 0)
    targets, backward_targets = np.zeros_like(tokens), np.zeros_like(tokens)
    weights = np.zeros(tokens.shape, np.float32)
    backward_weights = np.zeros(tokens.shape, np.float32)
    targets[:, :-1], weights[:, :-1] = tokens[:, 1:], same
    backward_targets[:, 1:], backward_weights[:, 1:] = tokens[:, :-1], same
    out = token_lm.model_batch(batch, inputs=tokens, targets=targets, weights=weights)
    out.update(
      chars=table[tokens],  # [batch, length, chars]
      backward_targets=backward_targets.astype(np.int32),
      backward_weights=backward_weights,
    )
    return out

  return preprocess


def loss_fn(params, batch, rng, *, model):
  """Mean cross-entropy of both directions; `rng=None` means evaluation (no dropout)."""
  forward, backward = model.apply(
    {'params': params},
    batch['chars'],
    batch['segment_ids'],
    deterministic=rng is None,
    rngs=None if rng is None else {'dropout': rng},
  )
  _, fw = metrics.token_cross_entropy(forward, batch['targets'], batch['weights'])
  _, bw = metrics.token_cross_entropy(
    backward, batch['backward_targets'], batch['backward_weights']
  )
  both = metrics.add(fw, bw)
  loss_sum, total = both['loss']
  loss = loss_sum / jnp.where(total > 0, total, 1.0)
  return loss, {**both, 'forward_loss': fw['loss'], 'backward_loss': bw['loss']}


def eval_summary(values: dict[str, float]) -> dict[str, float]:
  """Adds perplexities: exp of the mean loss, overall and per direction."""
  out = dict(values)
  for name in ('', 'forward_', 'backward_'):
    out[f'{name}perplexity'] = math.exp(min(values[f'{name}loss'], 50.0))
  return out
