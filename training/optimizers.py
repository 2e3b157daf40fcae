"""AdamW with warmup and linear or cosine decay, masked weight decay, clipping; frozen
parameters and layer-wise learning rates for fine-tuning (training/adaptation.py)."""

import jax
import optax

from training import adaptation


def learning_rate_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then `opt_cfg.schedule` decay to end_lr_fraction."""
  peak, warmup = opt_cfg.learning_rate, opt_cfg.warmup_steps
  end = peak * opt_cfg.end_lr_fraction
  if warmup < 0 or warmup > total_steps:
    raise ValueError(
      f'optimizer.warmup_steps={warmup} must be between 0 and total_steps={total_steps}.'
    )
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


def build(opt_cfg, total_steps: int) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`: clip by global norm, then AdamW; with frozen
  parameters or layer-wise learning rates (training/adaptation.py), per group."""
  schedule = learning_rate_schedule(opt_cfg, total_steps)

  def adamw(scale: float = 1.0) -> optax.GradientTransformation:
    return optax.adamw(
      schedule if scale == 1.0 else (lambda step: scale * schedule(step)),
      b1=opt_cfg.b1,
      b2=opt_cfg.b2,
      eps=opt_cfg.eps,
      weight_decay=opt_cfg.weight_decay,
      mask=decay_mask,
    )

  adapted = opt_cfg.get('freeze', '') or opt_cfg.get('train_top_layers', 0)
  if adapted or opt_cfg.get('layer_decay', 1.0) != 1.0:
    return adaptation.wrap(opt_cfg, adamw, opt_cfg.clip_norm)
  if opt_cfg.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_cfg.clip_norm), adamw())
  return adamw()
