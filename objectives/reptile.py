"""Reptile (Nichol et al. 2018), the cheap first-order meta-learner, for few-shot
classification of unseen classes.

Each batch row is an N-way K-shot episode (data/episodes.py). Per training episode the
encoder and a prototype-initialized head (objectives/fomaml.py's inner loop, with its
`inner_steps` and `inner_lr`) take plain SGD steps on ALL the episode's records (Reptile
splits no task into support and query); the meta-direction is theta - mean(phi), the
encoder weights minus their adapted copies averaged over the batch's episodes, which the
optimizer applies as a gradient (the paper's outer step, here with the run's optimizer).
It is returned as the gradient of 1/2 |theta - stop_gradient(mean phi)|^2, so nothing
differentiates through the inner loop: a step costs the inner loop's forward and backward
passes and no more. The logged loss is the episodes' query cross-entropy under the adapted
weights (adapted on those very records: a fit, not a held-out figure). Evaluation is
FOMAML's: adapt on each held-out episode's support, score its queries. Its keys are
FOMAML's (objective.inner_steps, inner_lr, pooling).
"""

import dataclasses

import jax
import jax.numpy as jnp

from objectives import fomaml
from objectives.shared import episodes


@dataclasses.dataclass(frozen=True)
class Reptile(fomaml.FirstOrderMAML):
  def passes_per_row(self, objective_cfg) -> float:
    """The prototypes' forward, the inner steps, the adapted logits' forward (metrics)."""
    del objective_cfg
    return self.inner_steps + 2 / 3

  def loss_fn(self, params, batch, rng, *, model):
    """Training: (the adapted query loss, with the gradient theta - mean phi); evaluation
    (`rng` None): FOMAML's support-adapted query loss."""
    if rng is None:
      return super().loss_fn(params, batch, rng, model=model)
    count = batch['inputs'].shape[0]
    keys = jax.random.split(rng, count)
    real = episodes.real_episodes(batch)  # [E]

    def one_episode(total, i):
      one = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i, 1), batch)
      every_record = real[i] * (one['segment_ids'][:, :, 0] > 0).astype(jnp.float32)  # [1, M]
      adapted, key = self.adapt(params, one, keys[i], model, every_record)
      _, metrics = episodes.query_loss(self._episode_logits(adapted, one, key, model), one)
      phi = jax.lax.stop_gradient(adapted[0])
      total = jax.tree.map(lambda t, p: t + real[i] * p, total, phi)
      return total, metrics

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, metrics = jax.lax.scan(one_episode, zeros, jnp.arange(count))
    mean_phi = jax.tree.map(lambda t: t / jnp.maximum(jnp.sum(real), 1.0), total)
    squares = jax.tree.map(lambda p, m: jnp.sum(jnp.square(p - m)), params, mean_phi)
    pull = 0.5 * sum(jax.tree.leaves(squares))  # Its gradient: theta - mean phi.
    metrics = jax.tree.map(jnp.sum, metrics)  # (sum, weight) pairs over the episodes.
    loss_sum, weight = metrics['loss']
    adapted_loss = jax.lax.stop_gradient(loss_sum / jnp.maximum(weight, 1.0))
    return pull - jax.lax.stop_gradient(pull) + adapted_loss, metrics


def configure(objective_cfg) -> Reptile:
  base = fomaml.configure(objective_cfg)
  return Reptile(base.pooling, base.inner_steps, base.inner_lr)
