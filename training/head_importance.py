"""Attention-head importance (Michel et al. 2019, eq. 2): how much the loss moves when
a head's output is scaled, I_h = |d loss / d xi_h| at xi = 1.

The model's attention multiplies each head's output by xi_h when the caller passes the
'head_mask' collection (models/transformer.Attention). The objective's loss keeps its
contract, `loss_fn(params, batch, rng, *, model)`: it is given the model behind a thin
proxy (`HeadMasked`) whose `apply` adds the collection to the variables it is called
with, so every objective that calls `model.apply({'params': params}, ...)` (all the
task objectives, through objectives/shared/task_inputs.apply, and the pretraining
losses) is differentiated with respect to the head mask without a change. An objective
that clones the model (objectives/multitask.py) is not supported.

Accumulated: the absolute gradient of each *batch's* loss, summed over the batches (as
Michel et al.'s released code and Hugging Face's bertology script do); with batches of
one example it is the paper's per-example expectation (times the number of examples).
Evaluation mode: rng=None, so no dropout.
"""

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from models import head_pruning


class HeadMasked:
  """`model` whose `apply` also passes `head_mask` (a 'head_mask' collection tree); every
  other attribute is the model's own."""

  def __init__(self, model, head_mask: dict):
    self._model, self._head_mask = model, head_mask

  def apply(self, variables, *args, **kwargs):
    return self._model.apply({**variables, 'head_mask': self._head_mask}, *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._model, name)


def head_counts(params) -> dict[int, int]:
  """{layer: heads it has now}, read from the query kernels [embed, heads, kv]."""
  modules = head_pruning.attention_modules(params)
  out = {}
  for layer, module in modules.items():
    node = params
    for part in module.split('/'):
      node = node[part]
    out[layer] = int(node['query']['kernel'].shape[1])
  return out


def ones_mask(params) -> dict:
  """The 'head_mask' collection of all ones ([heads] per self-attention module),
  nested as the modules are in `params`."""
  counts = head_counts(params)
  tree: dict = {}
  for layer, module in head_pruning.attention_modules(params).items():
    node = tree
    for part in module.split('/'):
      node = node.setdefault(part, {})
    node['mask'] = jnp.ones((counts[layer],), jnp.float32)
  return tree


def head_importance(model, params, batches: Iterable[dict], loss_fn: Callable) -> np.ndarray:
  """Sum over `batches` of |d loss / d head mask| per head.

  Args:
    model: the Flax module the objective's loss applies (e.g. heads.SequenceClassifier).
    params: its params (a nested dict; one looped stack, models/head_pruning.py).
    batches: model-ready batches of one shape (the objective's preprocessed rows).
    loss_fn: the objective's `loss_fn(params, batch, rng, *, model) -> (loss, metrics)`.

  Returns:
    float64 [layers, heads] (heads: the most any layer has); NaN where a layer has
    fewer heads (removed before), as models.head_pruning.choose_heads expects.

  Raises:
    ValueError: no batch was given, or params not of one looped stack.
  """
  counts = head_counts(params)
  width = max(counts.values())

  def loss_of_mask(head_mask, params, batch):
    loss, _ = loss_fn(params, batch, None, model=HeadMasked(model, head_mask))
    return loss

  grad_fn = jax.jit(jax.grad(loss_of_mask))
  mask = ones_mask(params)
  modules = head_pruning.attention_modules(params)
  total = np.zeros((len(counts), width))
  seen = 0
  for batch in batches:
    grads = jax.device_get(grad_fn(mask, params, batch))
    for layer, module in modules.items():
      node = grads
      for part in module.split('/'):
        node = node[part]
      total[layer, : counts[layer]] += np.abs(np.asarray(node['mask'], np.float64))
    seen += 1
  if not seen:
    raise ValueError('head_importance needs at least one batch.')
  for layer, count in counts.items():
    total[layer, count:] = np.nan
  return total
