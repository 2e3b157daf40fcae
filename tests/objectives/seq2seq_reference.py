"""The hand-computed reference that every encoder-decoder objective's loss must match."""

import jax
import jax.numpy as jnp
import numpy as np

from objectives.shared import seq2seq


def check_loss(model, batch: dict, params) -> None:
  """seq2seq.loss_fn under jit equals the weighted mean of -log p(target) computed by
  hand from the model's logits, counts the weights, and has finite gradients."""
  loss, metrics = jax.jit(lambda p, b: seq2seq.loss_fn(p, b, None, model=model))(params, batch)
  inputs = [batch[k] for k in seq2seq.MODEL_INPUTS]
  logits = jax.jit(lambda p: model.apply({'params': p}, *inputs))(params)  # Compiled, not eager.
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
  w = batch['weights']
  np.testing.assert_allclose(loss, (nll * w).sum() / w.sum(), rtol=1e-5)
  assert float(metrics['loss'][1]) == w.sum()
  loss_with_dropout = lambda p: seq2seq.loss_fn(p, batch, jax.random.key(1), model=model)[0]  # noqa: E731
  grads = jax.jit(jax.grad(loss_with_dropout))(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
