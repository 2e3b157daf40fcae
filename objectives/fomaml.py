"""First-order MAML (Finn et al. 2017, its first-order form) with a prototype-initialized
head (Proto-MAML: Triantafillou et al. 2020; for text, Bansal et al. 2020's LEOPARD sets
the head the same way), for few-shot classification of unseen classes.

Each batch row is an N-way K-shot episode (data/episodes.py). Per episode: the support
prototypes c_n (objectives/prototypical.py's, with `objective.pooling`) set a linear head
W_n = 2 c_n, b_n = -|c_n|^2, whose logits equal minus the squared distances up to a term
the softmax cancels; then `objective.inner_steps` steps of plain gradient descent at
`objective.inner_lr` on the support cross-entropy adapt the encoder and the head; the loss
is the query cross-entropy under the adapted weights. First order: the inner gradients
and the head's initialization are held constant (stop-gradient), so the gradient that
reaches the optimizer is the query gradient at the adapted weights, as in FOMAML; the
full second-order term is not computed. Episodes are adapted one after the other
(lax.map), each with its own copy of the encoder weights. Evaluation adapts the same way
on each held-out episode's support and scores its queries.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from ml_collections import config_dict

from objectives.shared import episodes


def config() -> config_dict.ConfigDict:
  """FOMAML's inner loop (the pooling is objectives/prototypical.py's key)."""
  c = config_dict.ConfigDict()
  c.inner_steps = 3  # Gradient steps on each episode's support set.
  c.inner_lr = 1e-3  # Their learning rate (plain SGD).
  return c


@dataclasses.dataclass(frozen=True)
class FirstOrderMAML(episodes.EpisodicObjective):
  pooling: str
  inner_steps: int
  inner_lr: float

  def _episode_logits(self, weights, one, rng, model):
    """[1, M, N] logits of one episode's records under (encoder params, head)."""
    params, (kernel, bias) = weights
    x = episodes.embed(params, one, rng, model, self.pooling)  # [1, M, embed]
    return jnp.einsum('emd,end->emn', x, kernel) + bias[:, None, :]

  def adapt(self, params, one, rng, model, weights):
    """((encoder params, head) after the inner loop, the key left for scoring) of one
    episode (its arrays with a leading 1): the head set from the support prototypes, then
    `inner_steps` SGD steps on the cross-entropy of the records `weights` [1, M] selects."""
    rngs = episodes.split_rng(rng, self.inner_steps + 1)
    x = episodes.embed(params, one, rngs[0], model, self.pooling)
    centres = jax.lax.stop_gradient(episodes.prototypes(x, one['onehot'], one['query']))
    head = (2.0 * centres, -jnp.sum(jnp.square(centres), -1))  # [1, N, embed], [1, N]
    labels = jnp.argmax(one['onehot'], -1)

    def inner_loss(adapted, key):
      logits = self._episode_logits(adapted, one, key, model)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)

    adapted = (params, head)
    for step in range(self.inner_steps):
      grads = jax.lax.stop_gradient(jax.grad(inner_loss)(adapted, rngs[step]))
      adapted = jax.tree.map(lambda w, g: w - self.inner_lr * g, adapted, grads)
    return adapted, rngs[-1]

  def passes_per_row(self, objective_cfg) -> float:
    """The prototypes' forward (1/3), the inner steps, the query loss at the adapted
    weights (each a forward and backward over all the episode's records)."""
    del objective_cfg
    return self.inner_steps + 4 / 3

  def adapt_and_score(self, params, one, rng, model):
    """(query loss, metrics) of one episode after the inner loop on its support records."""
    adapted, key = self.adapt(params, one, rng, model, 1.0 - one['query'])
    return episodes.query_loss(self._episode_logits(adapted, one, key, model), one)

  def loss_fn(self, params, batch, rng, *, model):
    """The mean query loss of the batch's episodes, each adapted on its own support."""
    count = batch['inputs'].shape[0]
    keys = None if rng is None else jax.random.split(rng, count)

    def one_episode(i):
      one = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i, 1), batch)
      return self.adapt_and_score(params, one, None if keys is None else keys[i], model)

    _, metrics = jax.lax.map(one_episode, jnp.arange(count))
    metrics = jax.tree.map(jnp.sum, metrics)  # (sum, weight) pairs over the episodes.
    loss_sum, total = metrics['loss']
    return loss_sum / jnp.maximum(total, 1.0), metrics


def configure(objective_cfg) -> FirstOrderMAML:
  episodes.check_pooling(objective_cfg.pooling)
  if objective_cfg.inner_steps < 1 or objective_cfg.inner_lr <= 0:
    raise ValueError(
      f'objective.inner_steps={objective_cfg.inner_steps} and objective.inner_lr='
      f'{objective_cfg.inner_lr}: the inner loop needs at least one step at a positive rate.'
    )
  return FirstOrderMAML(objective_cfg.pooling, objective_cfg.inner_steps, objective_cfg.inner_lr)
