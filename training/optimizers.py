"""AdamW with warmup and linear or cosine decay, masked weight decay, clipping; frozen
parameters and layer-wise learning rates for fine-tuning (training/adaptation.py);
RecAdam's recall of the pretrained weights."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from training import adaptation


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
  else:
    raise ValueError(
      f'Unknown optimizer.schedule {opt_cfg.schedule!r}; expected linear, cosine or constant.'
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


def recadam(opt_cfg, learning_rate) -> optax.GradientTransformation:
  """AdamW whose direction is annealed with a pull toward the pretrained weights
  (`optimizer.recadam_gamma`, `recadam_k`, `recadam_t0`)."""
  return optax.chain(
    optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps),
    optax.add_decayed_weights(opt_cfg.weight_decay, mask=decay_mask),
    recall_pretrained(opt_cfg.recadam_gamma, opt_cfg.recadam_k, opt_cfg.recadam_t0),
    optax.scale_by_learning_rate(learning_rate),
  )


def build(opt_cfg, total_steps: int) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`: clip by global norm, then AdamW; with frozen
  parameters or layer-wise learning rates (training/adaptation.py), per group."""
  schedule = learning_rate_schedule(opt_cfg, total_steps)

  def adamw(scale: float = 1.0) -> optax.GradientTransformation:
    learning_rate = schedule if scale == 1.0 else (lambda step: scale * schedule(step))
    if opt_cfg.recadam_gamma > 0:
      return recadam(opt_cfg, learning_rate)
    return optax.adamw(
      learning_rate,
      b1=opt_cfg.b1,
      b2=opt_cfg.b2,
      eps=opt_cfg.eps,
      weight_decay=opt_cfg.weight_decay,
      mask=decay_mask,
    )

  adapted = opt_cfg.freeze or opt_cfg.train_top_layers
  adapted = adapted or opt_cfg.unfreeze_every
  if adapted or opt_cfg.layer_decay != 1.0:
    return adaptation.wrap(opt_cfg, adamw, opt_cfg.clip_norm)
  if opt_cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_cfg.clip_norm), adamw())
  return adamw()
