"""Adversarial training on the token embeddings, inside the jitted train step: FGSM, PGD,
FreeLB and SMART's smoothness regularizer (`config.adversarial.*`).

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
  accumulated along the ascent ("free" large-batch). A departure from the paper, stated:
  the clean loss is a term of its own, so that every method's logged `loss` and accuracy
  are the clean batch's.
- 'smart' (Jiang et al. 2020, SMART's smoothness-inducing regularizer, without its
  Bregman proximal point step): the ascent is PGD's, but up the symmetric KL divergence
  between the model's outputs at x + delta and at x (a squared difference for one
  regression output), not up the task loss, so it needs no label; the loss is
  L(x) + weight x D(x, x + delta_K), D's gradient taken mt-dnn's way (each direction of
  the KL with its other side held). It needs a random start (`init_std` > 0): at delta = 0
  the divergence is at its minimum and its gradient is zero. The outputs are the model's
  [batch, classes] (a sentence classifier's or regressor's); other shapes are an error.

`init_std` > 0 starts every method's ascent from delta_0 ~ N(0, init_std^2) (projected),
drawn from the step's rng (FreeLB's and SMART's random start; FGSM from a random point is
Wong et al. 2020's); 0 starts from delta = 0.

The perturbation is found with the parameters held (their gradient flows only through
the losses above, at the deltas found: stop_gradient), under the same dropout masks
(the step's rng is reused, so delta alone separates the passes). The
perturbed losses are logged as `adversarial/<term>` (sum, weight) metrics and enter
the step's declared loss terms with `weight`, so gradient accumulation over
microbatches computes the whole batch's loss (training/state.py); with per-row balls,
a row's delta does not depend on the other rows of its batch (a random start, like
dropout, is drawn from each microbatch's rng).

Cost, in forward-backward passes of the clean step: fgsm 3 (clean, the gradient at
delta = 0, the perturbed), pgd and smart K + 2, freelb 2K + 1; FreeLB's paper reuses one
backward pass for both gradients (K + 1 here would need a custom VJP). Works for
objectives whose model has one embedding layer (encoders, decoder-only stacks).
"""

import jax
import jax.numpy as jnp

from models import input_perturbation

METHODS = ('', 'fgsm', 'pgd', 'freelb', 'smart')
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


def ascent(loss_at, start: jax.Array, adv_cfg) -> list[jax.Array]:
  """The perturbations a method evaluates its adversarial loss at: [delta_1] for fgsm,
  [delta_K] for pgd and smart, [delta_1 .. delta_K] for freelb.

  Args:
    loss_at: delta -> scalar loss (the parameters held); its gradient is the ascent's.
    start: delta_0, [batch, length, token_dim] float32 (zeros, or `random_start`).
    adv_cfg: `config.adversarial`.
  """
  grad_at = jax.grad(loss_at)
  method, norm, epsilon = adv_cfg.method, adv_cfg.norm, adv_cfg.epsilon
  if method == 'fgsm':
    return [project(start + epsilon * normalized(grad_at(start), norm), epsilon, norm)]
  delta, iterates = start, []
  for _ in range(adv_cfg.steps):
    delta = project(delta + adv_cfg.step_size * normalized(grad_at(delta), norm), epsilon, norm)
    iterates.append(delta)
  return iterates if method == 'freelb' else iterates[-1:]


def random_start(zeros: jax.Array, adv_cfg, rng) -> jax.Array:
  """delta_0: N(0, init_std^2) inside the ball, from `rng` (the step's), or `zeros`."""
  if not adv_cfg.init_std:
    return zeros
  if rng is None:
    raise ValueError('adversarial.init_std > 0 draws a random start from the step rng: none given.')
  key = jax.random.fold_in(rng, 0x5EED)  # Apart from the dropout draws of the same rng.
  noise = adv_cfg.init_std * jax.random.normal(key, zeros.shape, zeros.dtype)
  return project(noise, adv_cfg.epsilon, adv_cfg.norm)


def kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
  """KL(softmax(p) || softmax(q)) per row of [batch, classes] logits: [batch]."""
  log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def divergence(moved: jax.Array, clean: jax.Array) -> jax.Array:
  """SMART's D per row [batch] of two [batch, classes] outputs: the symmetric KL, each
  direction's gradient flowing into one side only (KL(clean || moved) into `moved`,
  KL(moved || clean) into `clean`); one output (a regression): the squared difference."""
  if moved.shape[-1] == 1:
    return jnp.square(moved[:, 0] - clean[:, 0]).astype(jnp.float32)
  hold = jax.lax.stop_gradient
  return kl(hold(clean), moved) + kl(hold(moved), clean)


def _sentence_outputs(outputs: list, method: str) -> jax.Array:
  """The one [batch, classes] output of a loss's model call."""
  if len(outputs) != 1 or not hasattr(outputs[0], 'ndim') or outputs[0].ndim != 2:
    shapes = [getattr(o, 'shape', type(o).__name__) for o in outputs]
    raise ValueError(
      f"adversarial.method={method!r} compares a model's [batch, classes] outputs; this "
      f"objective's loss called the model {len(outputs)} time(s), returning {shapes}."
    )
  return outputs[0]


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
    site, zeros = _embedding_zeros(loss_fn, params, batch, rng, model, kwargs)
    held = jax.lax.stop_gradient(params)
    start = random_start(zeros, adv_cfg, rng)

    def perturbed(p, delta):
      moved = input_perturbation.Perturbed(model, site.tree(delta))
      loss, metrics = loss_fn(p, batch, rng, model=moved, **kwargs)
      return loss, metrics, moved.outputs

    if adv_cfg.method == 'smart':
      return _smart(perturbed, params, held, zeros, start, adv_cfg)
    clean, metrics = loss_fn(params, batch, rng, model=model, **kwargs)
    metrics = dict(metrics)
    deltas = [
      jax.lax.stop_gradient(d)
      for d in ascent(lambda d: perturbed(held, d)[0], start, adv_cfg)
    ]  # fmt: skip
    losses, parts, _ = zip(*(perturbed(params, d) for d in deltas), strict=True)
    count = len(deltas)
    adversarial = sum(losses) / count
    for name in [n for n in metrics if not n.startswith(PREFIX)]:
      total = sum(p[name][0] for p in parts) / count  # Same batch: the same weight.
      metrics[f'{PREFIX}{name}'] = (total, parts[0][name][1])
    rows = jnp.float32(zeros.shape[0])
    metrics[f'{PREFIX}delta_norm'] = (jnp.sum(row_norms(deltas[-1], adv_cfg.norm)), rows)
    return clean + adv_cfg.weight * adversarial, metrics

  return adversarial_loss_fn


def _smart(perturbed, params, held, zeros, start, adv_cfg):
  """SMART: the clean loss (the model at x + 0, its outputs kept) plus `weight` x the mean
  divergence between the outputs at x + delta_K and at x."""
  clean, metrics, outputs = perturbed(params, zeros)
  clean_out = _sentence_outputs(outputs, adv_cfg.method)
  target = jax.lax.stop_gradient(clean_out)

  def divergence_at(delta):  # The parameters held: the ascent's objective.
    moved = _sentence_outputs(perturbed(held, delta)[2], adv_cfg.method)
    return jnp.sum(divergence(moved, target))

  (delta,) = [jax.lax.stop_gradient(d) for d in ascent(divergence_at, start, adv_cfg)]
  moved = _sentence_outputs(perturbed(params, delta)[2], adv_cfg.method)
  per_row = divergence(moved, clean_out)  # [batch]
  rows = jnp.float32(zeros.shape[0])
  metrics = dict(metrics)
  metrics[f'{PREFIX}smoothness'] = (jnp.sum(per_row), rows)
  metrics[f'{PREFIX}delta_norm'] = (jnp.sum(row_norms(delta, adv_cfg.norm)), rows)
  return clean + adv_cfg.weight * jnp.sum(per_row) / rows, metrics


def loss_terms(terms: dict[str, float], adv_cfg) -> dict[str, float]:
  """The step's declared loss terms (objectives/api.py `loss_terms`) with the adversarial
  copies of each at `weight` (SMART: its smoothness term at `weight`)."""
  if not adv_cfg.method:
    return terms
  if adv_cfg.method == 'smart':
    return {**terms, f'{PREFIX}smoothness': adv_cfg.weight}
  return {**terms, **{f'{PREFIX}{name}': adv_cfg.weight * c for name, c in terms.items()}}


def check_config(adv_cfg) -> None:
  """Raises ValueError on a method, norm or count the step cannot run."""
  if adv_cfg.method not in METHODS:
    raise ValueError(f'adversarial.method={adv_cfg.method!r}; expected one of {METHODS}.')
  if adv_cfg.norm not in NORMS:
    raise ValueError(f'adversarial.norm={adv_cfg.norm!r}; expected one of {NORMS}.')
  if adv_cfg.method in ('pgd', 'freelb', 'smart') and adv_cfg.steps < 1:
    raise ValueError(f'adversarial.steps={adv_cfg.steps}: {adv_cfg.method} needs >= 1.')
  if adv_cfg.method == 'smart' and not adv_cfg.init_std:
    raise ValueError(
      'adversarial.method=smart needs adversarial.init_std > 0: at delta = 0 the divergence '
      'is at its minimum and its gradient is zero, so the ascent would not move.'
    )
