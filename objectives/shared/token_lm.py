"""What token-level language-modelling objectives share (MLM, CLM, and their variants).

Their host side ends in the same model batch ({inputs, targets, weights,
segment_ids, positions}), and their loss is the same weighted next-/masked-token
cross-entropy; an objective module re-exports `loss_fn` and `eval_summary` from
here and writes only its own corruption.
"""

import math

import numpy as np

from objectives.shared import metrics


def model_batch(rows: dict, *, inputs, targets, weights) -> dict:
  """The arrays the model and loss see, from packed `rows` and the objective's choices.

  Args:
    rows: the loader's packed rows (`segment_ids`, `positions`: [batch, length]).
    inputs: [batch, length] ids fed to the model.
    targets: [batch, length] ids to predict.
    weights: [batch, length] 1 where a prediction counts.
  """
  return {
    'inputs': np.asarray(inputs, np.int32),
    'targets': np.asarray(targets, np.int32),
    'weights': np.asarray(weights, np.float32),
    'segment_ids': rows['segment_ids'].astype(np.int32),
    'positions': rows['positions'].astype(np.int32),
  }


# The batch arrays a decoder-only or encoder-only model takes, in order.
MODEL_INPUTS = ('inputs', 'segment_ids', 'positions')


def loss_fn(params, batch, rng, *, model, model_inputs=MODEL_INPUTS):
  """Mean cross-entropy over the weighted positions; `rng=None` means evaluation.

  `model_inputs` names the batch arrays passed to the model, in order.
  """
  logits = model.apply(
    {'params': params},
    *(batch[name] for name in model_inputs),
    deterministic=rng is None,
    rngs=None if rng is None else {'dropout': rng},
  )
  return metrics.token_cross_entropy(logits, batch['targets'], batch['weights'])


def eval_summary(values: dict[str, float]) -> dict[str, float]:
  """Adds perplexity, exp(mean loss over the predicted positions)."""
  return {**values, 'perplexity': math.exp(min(values['loss'], 50.0))}
