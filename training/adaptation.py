"""Which parameters a fine-tuning run trains, and at what learning rate.

Config keys (configs/base.py, `optimizer.*`), composable:

- `freeze`: comma-separated regular expressions over parameter paths such as
  `encoder/block_3/attention/query/kernel`; a matching parameter is frozen (feature
  extraction: `freeze='^encoder/'`).
- `train_top_layers` = k > 0: only the top k blocks of the encoder (and everything
  above it: pooler, heads) train; the embeddings and lower blocks are frozen.
- `layer_decay` = d < 1: layer-wise learning-rate decay (as ELECTRA fine-tunes):
  the heads keep the peak rate, block i of L gets d^(L - i), the embeddings d^(L + 1).
- `unfreeze_every` = n > 0: gradual unfreezing from the top (ULMFiT, Howard & Ruder
  2018): the heads train from step 0, block L-1 from step n, block L-2 from 2n, ...,
  the embeddings last; until its step a layer's gradient and update are zero.

A frozen parameter gets no update and no optimizer state (its slot in the
optimizer is `optax.set_to_zero`, which holds nothing), and its gradient is
zeroed before clipping, so it does not count in the global norm either.
"""

import math
import re

import jax
import jax.numpy as jnp
import optax

FROZEN = 'frozen'
_BLOCK = re.compile(r'(?:^|/)(?:encoder|decoder)/block_(\d+)(?:/|$)')
_EMBED = re.compile(r'(?:^|/)(?:encoder|decoder)/embed(?:/|$)|^shared(?:/|$)')


def path_name(path) -> str:
  """'encoder/block_0/attention/query/kernel' for a pytree key path; the box's attribute
  of a boxed leaf (nn.LogicallyPartitioned's `.value`, at init) is not part of the name,
  so a pattern names a parameter alike boxed and unboxed."""
  return '/'.join(
    str(getattr(key, 'key', getattr(key, 'name', key)))
    for key in path
    if not isinstance(key, jax.tree_util.GetAttrKey)
  )


def _depth(names: list[str]) -> int:
  """Blocks of the (encoder) stack: 1 + the largest block index in the paths."""
  indices = [int(m.group(1)) for m in map(_BLOCK.search, names) if m]
  return max(indices) + 1 if indices else 0


def layer_of(name: str, depth: int) -> int:
  """0 for embeddings, i + 1 for block i, depth + 1 above the stack (heads, pooler)."""
  block = _BLOCK.search(name)
  if block:
    return int(block.group(1)) + 1
  return 0 if _EMBED.search(name) else depth + 1


def labels(opt_cfg, params) -> object:
  """A tree like `params` of labels: FROZEN, or 'scale_<layer>' (its learning-rate group)."""
  names = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  patterns = [p.strip() for p in opt_cfg.freeze.split(',') if p.strip()]
  top = opt_cfg.train_top_layers
  depth = _depth(names)
  per_layer = top or opt_cfg.layer_decay != 1.0 or opt_cfg.unfreeze_every
  if per_layer and any('blocks/' in n or n.startswith('blocks') for n in names):
    raise ValueError(
      'optimizer.train_top_layers / layer_decay / unfreeze_every need one parameter tree '
      'per block; '
      'this model scans its layers (model.scan_layers=true): use the looped layout.'
    )
  if top and not 0 < top <= depth:
    raise ValueError(f'optimizer.train_top_layers={top} must be in 1..{depth} (the blocks).')
  for pattern in patterns:
    if not any(re.search(pattern, n) for n in names):
      raise ValueError(f'optimizer.freeze pattern {pattern!r} matches no parameter.')

  def label(path, _):
    name = path_name(path)
    layer = layer_of(name, depth)
    if any(re.search(p, name) for p in patterns) or (top and layer <= depth - top):
      return FROZEN
    return f'scale_{layer}'

  return jax.tree_util.tree_map_with_path(label, params)


def trained_count(opt_cfg, params) -> tuple[int, int]:
  """(entries of the parameters the optimizer updates, entries of all parameters): the
  frozen ones (`freeze`, `train_top_layers`) excluded; with `unfreeze_every` every layer
  counts, as every layer trains in the end."""
  sizes = jax.tree.map(lambda x: int(math.prod(x.shape)), params)
  marks = labels(opt_cfg, params)
  trained = sum(n for n, lab in zip(jax.tree.leaves(sizes), jax.tree.leaves(marks), strict=True)
                if lab != FROZEN)  # fmt: skip
  return trained, sum(jax.tree.leaves(sizes))


def layers(params) -> object:
  """A tree like `params` of layer numbers (0 embeddings, i + 1 block i, depth + 1 above)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  depth = _depth([path_name(p) for p, _ in flat])
  return jax.tree_util.tree_map_with_path(lambda p, _: layer_of(path_name(p), depth), params)


def gradual_unfreeze(every: int) -> optax.GradientTransformation:
  """Zeroes the updates of the layers not yet unfrozen: layer l of top T trains from
  step (T - l) x `every` on (ULMFiT's gradual unfreezing)."""

  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params):
    layer = layers(params)
    top = max(jax.tree.leaves(layer), default=0)
    gated = jax.tree.map(
      lambda u, lay: jnp.where(state.count >= (top - lay) * every, u, jnp.zeros_like(u)),
      updates,
      layer,
    )
    return gated, optax.ScaleByScheduleState(count=state.count + 1)

  return optax.GradientTransformation(init, update)


def wrap(opt_cfg, make_optimizer, clip_norm: float) -> optax.GradientTransformation:
  """The run's optimizer: `make_optimizer(scale)` (optimizer.name at `scale` x the schedule) per
  learning-rate group, nothing for frozen parameters, clipping over the trained ones."""
  decay = opt_cfg.layer_decay
  if not 0.0 < decay <= 1.0:
    raise ValueError(f'optimizer.layer_decay={decay} must be in (0, 1].')

  def frozen_mask(params):
    return jax.tree.map(lambda lab: lab == FROZEN, labels(opt_cfg, params))

  def transforms(params):
    found = set(jax.tree.leaves(labels(opt_cfg, params)))
    layers = [int(lab.split('_')[1]) for lab in found if lab != FROZEN]
    top = max(layers, default=0)
    out = {lab: optax.set_to_zero() for lab in found if lab == FROZEN}
    for layer in layers:
      out[f'scale_{layer}'] = make_optimizer(decay ** (top - layer))
    return out

  def init(params):
    return _chain(params).init(params)

  def update(updates, state, params=None):
    return _chain(params).update(updates, state, params)

  def _chain(params):
    parts = [optax.masked(optax.set_to_zero(), frozen_mask(params))]
    every = opt_cfg.unfreeze_every
    if every:  # Gradients of still-frozen layers are zero, so Adam's moments stay clean.
      parts.append(gradual_unfreeze(every))
    if clip_norm > 0:
      parts.append(optax.clip_by_global_norm(clip_norm))
    parts.append(optax.multi_transform(transforms(params), labels(opt_cfg, params)))
    if every:  # And weight decay does not move them either.
      parts.append(gradual_unfreeze(every))
    return optax.chain(*parts)

  return optax.GradientTransformation(init, update)
