"""What token-level language-modelling objectives share (MLM, CLM, and their variants).

Their host side ends in the same model batch ({inputs, targets, weights,
segment_ids, positions}), and their loss is the same weighted next-/masked-token
cross-entropy; an objective module re-exports `loss_fn` and `eval_summary` from
here and writes only its own corruption.
"""

import math

import jax.numpy as jnp
import numpy as np

from objectives.shared import metrics


def model_batch(rows: dict, *, inputs, targets, weights, max_predictions: int = 0) -> dict:
  """The arrays the model and loss see, from packed `rows` and the objective's choices.

  Args:
    rows: the loader's packed rows (`segment_ids`, `positions`: [batch, length]).
    inputs: [batch, length] ids fed to the model.
    targets: [batch, length] ids to predict.
    weights: [batch, length] 1 where a prediction counts.
    max_predictions: P > 0 (masked LMs, whose targets are the uncorrupted tokens): also
      the first P predicted positions of each row and their targets and weights,
      `masked_positions` / `masked_targets` / `masked_weights` [batch, P], so that only
      they reach the output projection (`loss_fn`). A row with more than P is cut to
      P: the rest are restored in `inputs` (not corrupted, not predicted, as BERT's
      data generation caps them) and counted in `dropped_predictions` [batch].
  """
  inputs, weights = np.asarray(inputs), np.asarray(weights, np.float32)
  out = {
    'segment_ids': rows['segment_ids'].astype(np.int32),
    'positions': rows['positions'].astype(np.int32),
  }
  if max_predictions > 0:
    predicted = weights > 0
    rank = np.cumsum(predicted, axis=1)  # 1-based rank of each predicted position.
    dropped = predicted & (rank > max_predictions)
    inputs = np.where(dropped, targets, inputs)
    weights = np.where(dropped, 0.0, weights).astype(np.float32)
    kept = predicted & ~dropped
    # The kept positions first (stable: in order), then padding slots at position 0.
    order = np.argsort(~kept, axis=1, kind='stable')[:, :max_predictions]
    slots = np.take_along_axis(kept, order, axis=1)
    out['masked_positions'] = np.where(slots, order, 0).astype(np.int32)
    out['masked_targets'] = np.take_along_axis(np.asarray(targets), order, 1).astype(np.int32)
    out['masked_weights'] = np.where(slots, np.take_along_axis(weights, order, 1), 0.0)
    out['masked_weights'] = out['masked_weights'].astype(np.float32)
    out['dropped_predictions'] = dropped.sum(axis=1).astype(np.float32)
  if 'boxes' in rows:  # Pages with layout (data/layout.py): each token's box, for the model.
    out['boxes'] = rows['boxes'].astype(np.int32)
  out.update(
    inputs=np.asarray(inputs, np.int32),
    targets=np.asarray(targets, np.int32),
    weights=weights,
  )
  return out


def predictions(batch: dict) -> tuple[dict, object, object]:
  """(model keyword arguments, targets, weights) of the positions a loss predicts: the
  gathered `masked_*` arrays when the batch has them (`model_batch`), else every
  position's `targets` and `weights`."""
  if 'masked_positions' in batch:
    kwargs = {'masked_positions': batch['masked_positions']}
    return kwargs, batch['masked_targets'], batch['masked_weights']
  return {}, batch['targets'], batch['weights']


def dropped_metric(batch: dict) -> dict:
  """`dropped_predictions`: masked tokens per batch cut by max_predictions (should be 0)."""
  if 'dropped_predictions' not in batch:
    return {}
  return {'dropped_predictions': (batch['dropped_predictions'].sum(), jnp.float32(1.0))}


# The batch arrays a decoder-only or encoder-only model takes, in order.
MODEL_INPUTS = ('inputs', 'segment_ids', 'positions')


def loss_fn(params, batch, rng, *, model, model_inputs=MODEL_INPUTS):
  """Mean cross-entropy over the weighted positions; `rng=None` means evaluation.

  `model_inputs` names the batch arrays passed to the model, in order. With gathered
  positions (`model_batch`'s max_predictions) the model projects only those onto the
  vocabulary: logits [batch, P, vocab] instead of [batch, length, vocab].
  """
  kwargs, targets, weights = predictions(batch)
  if 'boxes' in batch:  # Pages with layout: the encoder's 2-D positions (LayoutLM).
    kwargs['boxes'] = batch['boxes']
  logits = model.apply(
    {'params': params},
    *(batch[name] for name in model_inputs),
    deterministic=rng is None,
    rngs=None if rng is None else {'dropout': rng},
    **kwargs,
  )
  loss, values = metrics.token_cross_entropy(logits, targets, weights)
  return loss, {**values, **dropped_metric(batch)}


def eval_summary(values: dict[str, float]) -> dict[str, float]:
  """Adds perplexity, exp(mean loss over the predicted positions)."""
  return {**values, 'perplexity': math.exp(min(values['loss'], 50.0))}
