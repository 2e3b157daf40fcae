"""Adversarial training on the token embeddings, inside the jitted train step: FGSM, PGD
and FreeLB (`config.adversarial.*`).

Text has no gradient, its embeddings do: a perturbation delta [batch, length, token_dim]
is added to the token embeddings (models/input_perturbation.py) and moved up the loss's
gradient, within a ball of radius `epsilon` around each row's embeddings ('l2': the
row's whole delta, ||delta_row||_2 <= epsilon, as Miyato et al. 2017 and FreeLB do;
'linf': every coordinate, |delta| <= epsilon, as Goodfellow et al. 2015's FGSM). The
ascent direction is the gradient normalized per row (l2) or its sign (linf).

- 'fgsm' (Goodfellow et al. 2015; Miyato et al. 2017's l2 form for text): one step of
  length epsilon from delta = 0; the loss is L(x) + weight x L(x + delta).
- 'pgd' (Madry et al. 2018): `steps` ascent steps of `step_size` from delta = 0, each
  projected back onto the ball; the loss is L(x) + weight x L(x + delta_K).
- 'freelb' (Zhu et al. 2020): the same ascent, and the loss averages every iterate's,
  L(x) + weight x mean_k L(x + delta_k), k = 1..K, so the parameters' gradient is
  accumulated along the ascent ("free" large-batch). Two departures from the paper,
  stated: delta_0 = 0 (its code's adv-init-mag 0) rather than a random start, and the
  clean loss is a term of its own, so that every method's logged `loss` and accuracy
  are the clean batch's.

The perturbation is found with the parameters held (their gradient flows only through
the losses above, at the deltas found: stop_gradient), under the same dropout masks
(the step's rng is reused, so delta alone separates the passes). The
perturbed losses are logged as `adversarial/<term>` (sum, weight) metrics and enter
the step's declared loss terms with `weight`, so gradient accumulation over
microbatches computes the whole batch's loss (training/state.py); with per-row balls,
a row's delta does not depend on the other rows of its batch.

Cost, in forward-backward passes of the clean step: fgsm 3 (clean, the gradient at
delta = 0, the perturbed), pgd K + 2, freelb 2K + 1; FreeLB's paper reuses one
backward pass for both gradients (K + 1 here would need a custom VJP). Works for
objectives whose model has one embedding layer (encoders, decoder-only stacks).
"""

import jax
import jax.numpy as jnp

from models import input_perturbation

METHODS = ('', 'fgsm', 'pgd', 'freelb')
NORMS = ('l2', 'linf')
PREFIX = 'adversarial/'


def normalized(grad: jax.Array, norm: str) -> jax.Array:
  """The ascent direction per row [batch, length, dim]: unit l2 norm per row, or the sign."""
  if norm == 'linf':
    return jnp.sign(grad)
  size = jnp.sqrt(jnp.sum(jnp.square(grad), axis=(1, 2), keepdims=True))
  return grad / jnp.maximum(size, 1e-12)


def project(delta: jax.Array, epsilon: float, norm: str) -> jax.Array:
  """`delta` [batch, length, dim] brought back inside each row's ball of radius epsilon."""
  if norm == 'linf':
    return jnp.clip(delta, -epsilon, epsilon)
  size = jnp.sqrt(jnp.sum(jnp.square(delta), axis=(1, 2), keepdims=True))
  return delta * jnp.minimum(1.0, epsilon / jnp.maximum(size, 1e-12))


def row_norms(delta: jax.Array, norm: str) -> jax.Array:
  """Each row's perturbation size [batch] in the ball's norm."""
  if norm == 'linf':
    return jnp.max(jnp.abs(delta), axis=(1, 2))
  return jnp.sqrt(jnp.sum(jnp.square(delta), axis=(1, 2)))


def ascent(loss_at, zeros: jax.Array, adv_cfg) -> list[jax.Array]:
  """The perturbations a method evaluates its adversarial loss at: [delta_1] for fgsm,
  [delta_K] for pgd, [delta_1 .. delta_K] for freelb.

  Args:
    loss_at: delta -> scalar loss (the parameters held); its gradient is the ascent's.
    zeros: the shape of delta, [batch, length, token_dim], float32.
    adv_cfg: `config.adversarial`.
  """
  grad_at = jax.grad(loss_at)
  method, norm, epsilon = adv_cfg.method, adv_cfg.norm, adv_cfg.epsilon
  if method == 'fgsm':
    return [project(epsilon * normalized(grad_at(zeros), norm), epsilon, norm)]
  delta, iterates = zeros, []
  for _ in range(adv_cfg.steps):
    delta = project(delta + adv_cfg.step_size * normalized(grad_at(delta), norm), epsilon, norm)
    iterates.append(delta)
  return iterates if method == 'freelb' else iterates[-1:]


def _embedding_zeros(loss_fn, params, batch, rng, model, kwargs) -> tuple:
  """(site, zeros [batch, length, token_dim] float32) of the model's token embeddings,
  from the shapes of one call of the loss (nothing is computed)."""

  def sown(p):
    sowing = input_perturbation.Sowing(model)
    loss_fn(p, batch, rng, model=sowing, **kwargs)
    return sowing.sown

  calls = jax.eval_shape(sown, params)
  site = input_perturbation.locate(calls[0])
  shape = site.read(calls[0]).shape
  return site, jnp.zeros(shape, jnp.float32)


def wrap(loss_fn, adv_cfg):
  """The objective's `loss_fn(params, batch, rng, *, model, **kwargs)` with the
  adversarial loss of `adv_cfg` added (unchanged when `adv_cfg.method` is '')."""
  if not adv_cfg.method:
    return loss_fn
  check_config(adv_cfg)

  def adversarial_loss_fn(params, batch, rng, *, model, **kwargs):
    clean, metrics = loss_fn(params, batch, rng, model=model, **kwargs)
    metrics = dict(metrics)
    site, zeros = _embedding_zeros(loss_fn, params, batch, rng, model, kwargs)
    held = jax.lax.stop_gradient(params)

    def perturbed(p, delta):
      return loss_fn(p, batch, rng, model=input_perturbation.Perturbed(model, site.tree(delta)),
                     **kwargs)  # fmt: skip

    deltas = [
      jax.lax.stop_gradient(d)
      for d in ascent(lambda d: perturbed(held, d)[0], zeros, adv_cfg)
    ]  # fmt: skip
    losses, parts = zip(*(perturbed(params, d) for d in deltas), strict=True)
    count = len(deltas)
    adversarial = sum(losses) / count
    for name in [n for n in metrics if not n.startswith(PREFIX)]:
      total = sum(p[name][0] for p in parts) / count  # Same batch: the same weight.
      metrics[f'{PREFIX}{name}'] = (total, parts[0][name][1])
    rows = jnp.float32(zeros.shape[0])
    metrics[f'{PREFIX}delta_norm'] = (jnp.sum(row_norms(deltas[-1], adv_cfg.norm)), rows)
    return clean + adv_cfg.weight * adversarial, metrics

  return adversarial_loss_fn


def loss_terms(terms: dict[str, float], adv_cfg) -> dict[str, float]:
  """The step's declared loss terms (objectives/api.py `loss_terms`) with the adversarial
  copies of each, at `weight`."""
  if not adv_cfg.method:
    return terms
  return {**terms, **{f'{PREFIX}{name}': adv_cfg.weight * c for name, c in terms.items()}}


def check_config(adv_cfg) -> None:
  """Raises ValueError on a method, norm or count the step cannot run."""
  if adv_cfg.method not in METHODS:
    raise ValueError(f'adversarial.method={adv_cfg.method!r}; expected one of {METHODS}.')
  if adv_cfg.norm not in NORMS:
    raise ValueError(f'adversarial.norm={adv_cfg.norm!r}; expected one of {NORMS}.')
  if adv_cfg.method in ('pgd', 'freelb') and adv_cfg.steps < 1:
    raise ValueError(f'adversarial.steps={adv_cfg.steps}: {adv_cfg.method} needs >= 1.')
