"""The optimizer of a run: `optimizer.name` (AdamW by default; LAMB, Adafactor, Adam, SGD),
all from optax, with the warmup and decay schedules, clipping by global norm, weight
decay masked to matrices, frozen parameters and layer-wise learning rates for
fine-tuning (training/adaptation.py), and RecAdam's recall of the pretrained weights.

- `adamw`: Adam with decoupled weight decay (Loshchilov & Hutter 2019; BERT's optimizer).
- `lamb`: LAMB (You et al. 2020), BERT's large-batch optimizer: Adam's direction plus
  decoupled weight decay, rescaled per parameter tensor by the trust ratio
  ||w|| / ||update||; biases and norms (vectors) get neither the decay nor the ratio.
- `adafactor`: Adafactor (Shazeer & Stern 2018), T5's optimizer: second moments
  factored into row and column statistics for matrices whose two largest sides are
  >= `adafactor_min_dim_to_factor`, no first moment unless `adafactor_momentum` > 0,
  updates clipped to RMS `adafactor_clipping` and scaled by the parameter's RMS (the
  relative step); with schedule 'rsqrt' it is T5's 1/sqrt(step) schedule.
- `adam`: Adam with L2 regularization (the decay added to the gradient, so Adam's
  scaling applies to it: the pre-AdamW recipe).
- `sgd`: SGD with `momentum` (0: plain) and L2 regularization.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from training import adaptation

# optimizer.schedule: the decays after warmup that learning_rate_schedule builds.
SCHEDULES = ('linear', 'cosine', 'rsqrt', 'constant')


def warmup_steps(opt_cfg, total_steps: int) -> int:
  """Warmup steps: `warmup_ratio` x total_steps (rounded) when the ratio is set, else
  `warmup_steps`; setting both is an error, so neither is silently ignored."""
  ratio, steps = opt_cfg.warmup_ratio, opt_cfg.warmup_steps
  if ratio:
    if steps:
      raise ValueError(
        f'optimizer.warmup_ratio={ratio} and optimizer.warmup_steps={steps} are both set; '
        'set one of them (warmup_steps=0 to use the ratio, warmup_ratio=0 to use the steps).'
      )
    if not 0.0 <= ratio <= 1.0:
      raise ValueError(f'optimizer.warmup_ratio={ratio} must be in [0, 1].')
    return round(ratio * total_steps)
  if steps < 0 or steps > total_steps:
    raise ValueError(
      f'optimizer.warmup_steps={steps} must be between 0 and total_steps={total_steps} '
      '(optimizer.warmup_ratio scales with total_steps).'
    )
  return steps


def learning_rate_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then `opt_cfg.schedule` decay to end_lr_fraction."""
  peak, warmup = opt_cfg.learning_rate, warmup_steps(opt_cfg, total_steps)
  end = peak * opt_cfg.end_lr_fraction
  decay_steps = max(total_steps - warmup, 1)
  if opt_cfg.schedule == 'linear':
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif opt_cfg.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt_cfg.end_lr_fraction)
  elif opt_cfg.schedule == 'constant':
    decay = optax.constant_schedule(peak)
  elif opt_cfg.schedule == 'rsqrt':  # T5: peak x sqrt(w / max(step, w)), w = warmup or 1.
    base = max(warmup, 1)
    decay = lambda t: peak * jnp.sqrt(base / jnp.maximum(t + warmup, base))  # noqa: E731
  else:
    raise ValueError(
      f'Unknown optimizer.schedule {opt_cfg.schedule!r}; expected one of {", ".join(SCHEDULES)}.'
    )
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params):
  """Weight decay on matrices (kernels, embeddings) only: not on biases or norms."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


class RecallState(NamedTuple):
  count: jax.Array  # int32 scalar: steps taken.
  pretrained: optax.Params  # The parameters at initialization (the pretrained weights).


def recall_pretrained(gamma: float, k: float, t0: float) -> optax.GradientTransformation:
  """RecAdam's annealed pull toward the pretrained weights (Chen et al. 2020, eq. 5-6):
  u <- lambda(t) u + (1 - lambda(t)) gamma (theta - theta*), lambda(t) = sigmoid(k (t - t0)),
  applied to Adam's direction before the learning rate, so early steps mostly recall
  the pretrained weights and later ones mostly fit the task. The state keeps
  theta* (one copy of the parameters)."""

  def init(params):
    return RecallState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.asarray, params))

  def update(updates, state, params):
    lam = jax.nn.sigmoid(k * (state.count.astype(jnp.float32) - t0))
    updates = jax.tree.map(
      lambda u, p, p0: lam * u + (1 - lam) * gamma * (p - p0), updates, params, state.pretrained
    )
    return updates, RecallState(state.count + 1, state.pretrained)

  return optax.GradientTransformation(init, update)


class EwcState(NamedTuple):
  anchor: optax.Params  # theta*: the parameters the run started from (init_from).
  fisher: optax.Params  # F: the diagonal Fisher of the earlier tasks (with_fisher sets it).


def ewc_penalty(strength: float) -> optax.GradientTransformation:
  """Elastic weight consolidation (Kirkpatrick et al. 2017): the gradient of
  strength / 2 x sum F (theta - theta*)^2 added to the loss gradient, g <- g + strength x
  F x (theta - theta*), before the optimizer scales it. theta* is the point the run starts
  from (its init_from: the model after the earlier tasks) and F their diagonal Fisher
  (training/fisher.py), zero until `with_fisher` puts it in the state."""

  def init(params):
    return EwcState(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params):
    updates = jax.tree.map(
      lambda g, p, a, f: g + strength * f * (p - a), updates, params, state.anchor, state.fisher
    )
    return updates, state

  return optax.GradientTransformation(init, update)


def with_fisher(opt_state, fisher):
  """`opt_state` with the Fisher of its EWC state replaced by `fisher` (a params tree).

  Raises:
    ValueError: the optimizer has no EWC state.
  """
  found = []

  def replace(node):
    if isinstance(node, EwcState):
      found.append(node)
      return node._replace(fisher=fisher)
    return node

  out = jax.tree.map(replace, opt_state, is_leaf=lambda n: isinstance(n, EwcState))
  if not found:
    raise ValueError('The optimizer has no EWC state: set optimizer.ewc_lambda > 0.')
  return out


def recadam(opt_cfg, learning_rate) -> optax.GradientTransformation:
  """AdamW whose direction is annealed with a pull toward the pretrained weights
  (`optimizer.recadam_gamma`, `recadam_k`, `recadam_t0`)."""
  return optax.chain(
    optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps),
    optax.add_decayed_weights(opt_cfg.weight_decay, mask=decay_mask),
    recall_pretrained(opt_cfg.recadam_gamma, opt_cfg.recadam_k, opt_cfg.recadam_t0),
    optax.scale_by_learning_rate(learning_rate),
  )


def lamb(opt_cfg, learning_rate) -> optax.GradientTransformation:
  """LAMB with the trust ratio only on the decayed (matrix) parameters: optax.lamb
  applies it to every tensor, biases and norms included, which BERT's LAMB does not."""
  return optax.chain(
    optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps),
    optax.add_decayed_weights(opt_cfg.weight_decay, mask=decay_mask),
    optax.masked(optax.scale_by_trust_ratio(), decay_mask),
    optax.scale_by_learning_rate(learning_rate),
  )


def adafactor(opt_cfg, learning_rate) -> optax.GradientTransformation:
  return optax.adafactor(
    learning_rate,
    min_dim_size_to_factor=opt_cfg.adafactor_min_dim_to_factor,
    decay_rate=opt_cfg.adafactor_decay_rate,
    multiply_by_parameter_scale=opt_cfg.adafactor_parameter_scale,
    clipping_threshold=opt_cfg.adafactor_clipping or None,
    momentum=opt_cfg.adafactor_momentum or None,
    weight_decay_rate=opt_cfg.weight_decay or None,
    weight_decay_mask=decay_mask,
    factored=opt_cfg.adafactor_factored,
  )


def l2_regularized(opt_cfg, scale: optax.GradientTransformation, learning_rate):
  """`scale` (Adam's or SGD's) applied to gradient + weight_decay x params (coupled L2)."""
  return optax.chain(
    optax.add_decayed_weights(opt_cfg.weight_decay, mask=decay_mask),
    scale,
    optax.scale_by_learning_rate(learning_rate),
  )


OPTIMIZERS = ('adamw', 'lamb', 'adafactor', 'adam', 'sgd')


def base_optimizer(opt_cfg, learning_rate) -> optax.GradientTransformation:
  """`optimizer.name` at `learning_rate` (a schedule), without clipping or adaptation."""
  name = opt_cfg.name
  if name not in OPTIMIZERS:
    raise ValueError(f'Unknown optimizer.name {name!r}; expected one of {", ".join(OPTIMIZERS)}.')
  if opt_cfg.recadam_gamma > 0:
    if name != 'adamw':
      raise ValueError(
        f'optimizer.recadam_gamma={opt_cfg.recadam_gamma} is RecAdam, an AdamW variant; '
        f'optimizer.name={name!r} cannot use it.'
      )
    return recadam(opt_cfg, learning_rate)
  if name == 'adamw':
    return optax.adamw(
      learning_rate,
      b1=opt_cfg.b1,
      b2=opt_cfg.b2,
      eps=opt_cfg.eps,
      weight_decay=opt_cfg.weight_decay,
      mask=decay_mask,
    )
  if name == 'lamb':
    return lamb(opt_cfg, learning_rate)
  if name == 'adafactor':
    return adafactor(opt_cfg, learning_rate)
  if name == 'adam':
    adam = optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps)
    return l2_regularized(opt_cfg, adam, learning_rate)
  momentum = optax.trace(decay=opt_cfg.momentum) if opt_cfg.momentum else optax.identity()
  return l2_regularized(opt_cfg, momentum, learning_rate)


def build(opt_cfg, total_steps: int) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`: clip by global norm, then `optimizer.name`; with
  frozen parameters or layer-wise learning rates (training/adaptation.py), per group."""
  schedule = learning_rate_schedule(opt_cfg, total_steps)

  def optimizer(scale: float = 1.0) -> optax.GradientTransformation:
    learning_rate = schedule if scale == 1.0 else (lambda step: scale * schedule(step))
    return base_optimizer(opt_cfg, learning_rate)

  adapted = opt_cfg.freeze or opt_cfg.train_top_layers
  adapted = adapted or opt_cfg.unfreeze_every
  if opt_cfg.ewc_lambda > 0:
    if adapted or opt_cfg.layer_decay != 1.0:
      raise ValueError(
        f'optimizer.ewc_lambda={opt_cfg.ewc_lambda}: EWC penalizes every parameter; it does '
        'not combine with frozen parameters or layer-wise learning rates.'
      )
    clip = [optax.clip_by_global_norm(opt_cfg.clip_norm)] if opt_cfg.clip_norm > 0 else []
    return optax.chain(*clip, ewc_penalty(opt_cfg.ewc_lambda), optimizer())
  if adapted or opt_cfg.layer_decay != 1.0:
    return adaptation.wrap(opt_cfg, optimizer, opt_cfg.clip_norm)
  if opt_cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_cfg.clip_norm), optimizer())
  return optimizer()
