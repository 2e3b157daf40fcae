"""Magnitude pruning during training: masks kept in the optimizer state.

`wrap(tx, config.prune, total_steps)` puts the run's optimizer inside a transformation
that holds one boolean mask per pruned matrix. Every `prune.frequency` optimizer steps
from `prune.begin_step` to `prune.end_step` the masks are recomputed from the current
weights' magnitudes, the fraction pruned following Zhu & Gupta (2017)'s cubic ramp

  s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,   s_i = 0, t = t0, t0 + dt, ..., t0 + n dt

(`prune.schedule='gradual'`), or all at once at `begin_step` ('oneshot'); after the
last update they stay fixed. `prune.scope='global'` ranks every pruned weight of the
model against one another (one magnitude threshold; some matrices end sparser than
others), 'layer' ranks each matrix's weights alone (each ends at the target; a scanned
stack's [layers, ...] kernel counts as one matrix per layer).

What is pruned (the rule): the matmul kernels of the Transformer blocks, i.e. the
`kernel` of attention's query, key, value and out projections (self- and
cross-attention) and of the MLP's wi / wi_0 / wi_1 / wo, under `encoder/` or `decoder/`
blocks (`block_<i>`, a scanned `blocks`, ALBERT's shared `block`). Not pruned:
embeddings, norms, biases, adapters, poolers and task heads: they are a small share of
the weights, and pruning them costs accuracy out of proportion (Gordon et al. 2020
prune BERT's matrices alone and find 30-40% sparsity free).

Guarantees, whatever the inner optimizer does (AdamW's weight decay and momentum
included): after every applied step a pruned weight is exactly 0, since its update is
`-param` (p + (-p) is exactly 0 in IEEE arithmetic); the inner optimizer sees a zero
gradient there (Adam's moments of pruned weights decay to 0, and they do not count in a
global-norm clipping). The other parameters get the inner optimizer's updates: with an
elementwise optimizer (AdamW, Adam, SGD) and no clipping, bit for bit those of the run
without pruning; Adafactor's factored statistics, LAMB's trust ratio and a global-norm
clipping see the pruned weights as zeros. A step that recomputes the masks ranks the
weights as they are before it, and already uses the new masks for its own update.
The masks live in the optimizer state, so they are sharded like their parameters
(training/state.fit_optimizer_names), checkpointed and digest-verified with the state,
and a step the train step skips (non-finite loss, loss spike) keeps the old masks and
count. The schedule counts the optimizer's applied updates, like the learning rate.

Masks are computed exactly: the k = round(s_t x n) smallest magnitudes of a group are
pruned, ties at the threshold broken by position (leaf, then row-major), found by
bisections over the bits of |w| and over positions (31 rounds of sums each, the second
only when ties need breaking). No sort, reshape or cumulative sum of a matrix: those
gather a sharded matrix (an FSDP run's masks cost one pass of sums per round instead).
At the end of the ramp k is computed in Python, so the final sparsity is the target to
the weight; during the ramp s_t x n is a float32 product (off by a few weights beyond
2^24 weights in a group). A group holds at most 2^31 - 1 weights (int32 counts).
"""

import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('gradual', 'oneshot')
SCOPES = ('global', 'layer')

# Parameter names (path keys joined by '/') of the pruned matrices: see the module doc.
_STACK = r'(?:^|/)(?:encoder|decoder)/'
_BLOCKS = r'(?:block_\d+|blocks|block)/'
_MATMUL = r'(?:(?:attention|cross_attention)/(?:query|key|value|out)|mlp/(?:wi|wi_0|wi_1|wo))/'
PRUNED = re.compile(_STACK + _BLOCKS + _MATMUL + r'kernel$')
_SCANNED = re.compile(_STACK + r'blocks/')  # A leading [layers] axis (nn.scan).
_MAX_GROUP = 2**31 - 1  # Weights in one ranking group: counts are int32.


def param_name(path) -> str:
  """'encoder/block_0/mlp/wi/kernel' for a key path; the `.value` of a boxed (logically
  partitioned) parameter is left out, so boxed and plain trees name leaves alike."""
  return '/'.join(str(key.key) for key in path if isinstance(key, jax.tree_util.DictKey))


def is_pruned(name: str) -> bool:
  """Whether the parameter `name` is one that magnitude pruning masks (the module's rule)."""
  return bool(PRUNED.search(name))


def pruned_names(params) -> list[str]:
  """The names of `params`' pruned matrices, in tree order."""
  return list(_named(params))


def _named(params) -> dict:
  """{name: array} of the pruned matrices of `params`, in tree order."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {param_name(p): x for p, x in flat if is_pruned(param_name(p))}


def resolved_end_step(prune_cfg, total_steps: int) -> int:
  """`prune.end_step`, or two thirds of the run when it is 0."""
  return prune_cfg.end_step or (2 * total_steps) // 3


def check_config(prune_cfg, total_steps: int) -> None:
  """Checks the `prune` section (nothing when sparsity is 0, pruning off).

  Args:
    prune_cfg: `config.prune`.
    total_steps: the run's optimizer steps; 0 when the run is sized later from
      num_epochs (the checks against the run's length then wait for `wrap`).

  Raises:
    ValueError: naming the bad value and what would be right.
  """
  sparsity = prune_cfg.sparsity
  if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
    raise ValueError(f'prune.sparsity={sparsity!r} must be a number in [0, 1).')
  if not 0.0 <= sparsity < 1.0:
    raise ValueError(
      f'prune.sparsity={sparsity} must be in [0, 1): the fraction of the pruned weights set '
      'to zero (0: pruning off).'
    )
  if sparsity == 0:
    return
  if prune_cfg.schedule not in SCHEDULES:
    raise ValueError(f'prune.schedule={prune_cfg.schedule!r} must be one of {SCHEDULES}.')
  if prune_cfg.scope not in SCOPES:
    raise ValueError(f'prune.scope={prune_cfg.scope!r} must be one of {SCOPES}.')
  begin, end, every = prune_cfg.begin_step, prune_cfg.end_step, prune_cfg.frequency
  for key, value, low in (('begin_step', begin, 0), ('end_step', end, 0), ('frequency', every, 1)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f'prune.{key}={value!r} must be an integer >= {low}.')
  if prune_cfg.schedule == 'oneshot':
    if end:
      raise ValueError(
        f"prune.end_step={end} is the end of the gradual ramp; prune.schedule='oneshot' "
        'prunes everything at prune.begin_step: leave end_step at 0.'
      )
    if total_steps and begin >= total_steps:
      raise ValueError(
        f'prune.begin_step={begin} must be < total_steps={total_steps}: the one-shot '
        'pruning would never happen.'
      )
    return
  if end and end <= begin:
    raise ValueError(f'prune.end_step={end} must be > prune.begin_step={begin}.')
  if not total_steps:
    return
  resolved = resolved_end_step(prune_cfg, total_steps)
  if resolved <= begin:
    raise ValueError(
      f'prune.begin_step={begin} must be < the ramp end {resolved} (prune.end_step=0: two '
      f'thirds of total_steps={total_steps}): lower begin_step or set end_step.'
    )
  if resolved >= total_steps:
    raise ValueError(
      f'prune.end_step={end} must be < total_steps={total_steps}: the final sparsity is '
      'reached at the update of step end_step.'
    )


def sparsity_at(step, prune_cfg, total_steps: int) -> jax.Array:
  """The sparsity of the masks in use at optimizer step `step` (0-based applied updates):
  the ramp's value at the last mask update at or before it (float32 scalar)."""
  final, begin = float(prune_cfg.sparsity), prune_cfg.begin_step
  step = jnp.asarray(step, jnp.int32)
  if prune_cfg.schedule == 'oneshot':
    return jnp.where(step >= begin, final, 0.0).astype(jnp.float32)
  end, every = resolved_end_step(prune_cfg, total_steps), prune_cfg.frequency
  last = begin + (jnp.clip(step, begin, end) - begin) // every * every
  last = jnp.where(step >= end, end, last)
  remaining = 1.0 - (last - begin).astype(jnp.float32) / (end - begin)
  ramp = final * (1.0 - remaining**3)
  return jnp.where(step < begin, 0.0, ramp).astype(jnp.float32)


def update_due(step, prune_cfg, total_steps: int) -> jax.Array:
  """Whether the masks are recomputed at optimizer step `step` (bool scalar)."""
  step = jnp.asarray(step, jnp.int32)
  begin = prune_cfg.begin_step
  if prune_cfg.schedule == 'oneshot':
    return step == begin
  end, every = resolved_end_step(prune_cfg, total_steps), prune_cfg.frequency
  on_grid = (step - begin) % every == 0
  return (step >= begin) & (step <= end) & (on_grid | (step == end))


def _magnitude_bits(x: jax.Array) -> jax.Array:
  """|x| as uint32 bits: for non-negative floats their order is the values' order."""
  return jax.lax.bitcast_convert_type(jnp.abs(x.astype(jnp.float32)), jnp.uint32)


def _row_major_index(shape: tuple[int, ...], first_axis: int) -> jax.Array:
  """int32 position of each element in row-major order over axes first_axis.. (the same
  for every index of the axes before): computed from iotas, so a sharded array needs no
  reshape (which would gather it)."""
  index, stride = jnp.zeros(shape, jnp.int32), 1
  for axis in reversed(range(first_axis, len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.int32, shape, axis) * stride
    stride *= shape[axis]
  return index


def _smallest_at_least(count_at_most, k: jax.Array, bits: int) -> jax.Array:
  """Per row g, the smallest uint32 T < 2^bits with count_at_most(T)[g] >= k[g] (T of
  shape [G]; count_at_most is non-decreasing in T): a bisection of `bits` rounds."""

  def bisect(_, bounds):
    low, high = bounds
    mid = low + (high - low) // 2
    enough = count_at_most(mid) >= k
    return jnp.where(enough, low, mid + 1), jnp.where(enough, mid, high)

  top = jnp.full(k.shape, (1 << bits) - 1, jnp.uint32)
  low, _ = jax.lax.fori_loop(0, bits, bisect, (jnp.zeros(k.shape, jnp.uint32), top))
  return low


def magnitude_masks(leaves: list[jax.Array], per_layer: bool, k: jax.Array) -> list[jax.Array]:
  """Keep-masks that prune exactly the k[g] smallest magnitudes of each group g.

  Args:
    leaves: the matrices ranked together (one group), or, with `per_layer`, one
      [layers, ...] scanned matrix whose layers are G groups.
    per_layer: whether axis 0 of each leaf indexes the groups.
    k: int32 [G], weights to prune per group (0 <= k[g] <= its size).

  Returns:
    bool arrays shaped as `leaves`, False where pruned. Ties at the threshold magnitude
    are pruned in order (leaf, then row-major position), so each group loses exactly
    k[g] weights. Only sums over the leaves are taken (two bisections of at most 32
    rounds), never a sort, reshape or cumulative sum of a (possibly sharded) matrix.
  """
  bits = [_magnitude_bits(x) for x in leaves]
  first = 1 if per_layer else 0
  k = jnp.asarray(k, jnp.int32)

  def per_group(t, ndim):  # [G] -> broadcastable against a leaf.
    return t.reshape(t.shape + (1,) * (ndim - 1)) if per_layer else t[0]

  def count(predicates) -> jax.Array:  # Elements where true, per group: [G].
    sums = [jnp.sum(p, axis=tuple(range(first, p.ndim)), dtype=jnp.int32) for p in predicates]
    return jnp.broadcast_to(sum(sums), k.shape)

  def at_most(t):
    return count([b <= per_group(t, b.ndim) for b in bits])

  threshold = _smallest_at_least(at_most, k, 31)  # |w| < 2^31 as bits (sign bit clear).
  below = [b < per_group(threshold, b.ndim) for b in bits]
  ties = [b == per_group(threshold, b.ndim) for b in bits]
  need = k - count(below)  # [G]: ties at the threshold still to prune.
  offsets, position = 0, []
  for b in bits:  # Position of each element in its group: leaf order, then row-major.
    position.append(_row_major_index(b.shape, first) + offsets)
    offsets += math.prod(b.shape[first:])

  def last_tie():  # The need-th tie by position (need >= 1); all of them when need is 0.
    def ties_up_to(j):
      return count([t & (p.astype(jnp.uint32) <= per_group(j, p.ndim))
                    for t, p in zip(ties, position, strict=True)])  # fmt: skip

    return _smallest_at_least(ties_up_to, jnp.maximum(need, 1), 31).astype(jnp.int32)

  # Ties beyond the threshold are rare (an exact zero, a repeated low-precision value):
  # the second bisection runs only when some group has more ties than it prunes.
  more_ties = jnp.any(count(ties) > need)
  cut = jax.lax.cond(more_ties, last_tie, lambda: jnp.full(k.shape, offsets, jnp.int32))
  cut = jnp.where(need > 0, cut, -1)
  return [
    ~(low | (tie & (p <= per_group(cut, p.ndim))))
    for low, tie, p in zip(below, ties, position, strict=True)
  ]


def _per_layer(name: str, scope: str) -> bool:
  """Whether each layer of matrix `name` is ranked alone (layer scope, scanned stack)."""
  return scope == 'layer' and bool(_SCANNED.search(name))


def _groups(named: dict, scope: str) -> list[tuple[list[str], bool, int]]:
  """The ranking groups: (names, per_layer, weights in one group) each."""
  if scope == 'global':
    return [(list(named), False, sum(x.size for x in named.values()))]
  out = []
  for name, x in named.items():
    per_layer = _per_layer(name, scope)
    out.append(([name], per_layer, x.size // x.shape[0] if per_layer else x.size))
  return out


def masks_for(params, sparsity, scope: str, final_sparsity: float | None = None) -> dict:
  """{pruned matrix name: keep-mask} pruning round(sparsity x n) weights of each group.

  Args:
    params: the parameter tree (unboxed arrays).
    sparsity: float scalar (traced or not), the fraction to prune.
    scope: 'global' (one group) or 'layer' (each matrix; each layer of a scanned one).
    final_sparsity: the ramp's end, a Python float: where `sparsity` reaches it, k is
      computed exactly in Python (float64) instead of in float32.
  """
  named = _named(params)
  masks = {}
  for names, per_layer, size in _groups(named, scope):
    k = jnp.round(jnp.asarray(sparsity, jnp.float32) * size).astype(jnp.int32)
    if final_sparsity is not None:
      k = jnp.where(sparsity >= final_sparsity, round(final_sparsity * size), k)
    k = jnp.broadcast_to(k, (named[names[0]].shape[0] if per_layer else 1,))
    leaves = [named[n] for n in names]
    masks.update(zip(names, magnitude_masks(leaves, per_layer, k), strict=True))
  return masks


class PruneState(NamedTuple):
  count: jax.Array  # int32 scalar: applied updates (the schedule's step).
  masks: optax.Params  # Like params: bool keep-masks of pruned matrices, MaskedNode elsewhere.
  inner_state: optax.OptState  # The run's optimizer's state.


def _mask_tree(params, masks: dict):
  def leaf(path, x):
    name = param_name(path)
    return masks[name] if name in masks else optax.MaskedNode()

  return jax.tree_util.tree_map_with_path(leaf, params)


def _is_masked_node(x) -> bool:
  return isinstance(x, optax.MaskedNode)


def wrap(tx: optax.GradientTransformation, prune_cfg, total_steps: int):
  """The run's optimizer `tx` with magnitude pruning (`tx` itself when sparsity is 0).

  Args:
    tx: the run's optimizer (training/optimizers.build).
    prune_cfg: `config.prune` (configs/base.py).
    total_steps: the run's optimizer steps (the default ramp ends at two thirds of it).

  Returns:
    An optax.GradientTransformation whose state is a `PruneState`; its `update` needs
    `params`.

  Raises:
    ValueError: a bad `prune` value (check_config), or a model without pruned matrices.
  """
  check_config(prune_cfg, total_steps)
  if prune_cfg.sparsity == 0:
    return tx
  final = float(prune_cfg.sparsity)

  def init(params):
    names = pruned_names(params)
    if not names:
      raise ValueError(
        f'prune.sparsity={final}: this model has no matrix that magnitude pruning masks '
        '(attention and MLP kernels under encoder/ or decoder/ blocks).'
      )
    # All ones until the first update; boxed params give boxed masks (their names kept).
    masks = jax.tree_util.tree_map_with_path(
      lambda path, x: (
        jnp.ones(x.shape, jnp.bool_) if is_pruned(param_name(path)) else optax.MaskedNode()
      ),
      params,
    )
    sizes = [size for _, _, size in _groups(_named(params), prune_cfg.scope)]
    if max(sizes) > _MAX_GROUP:
      raise ValueError(
        f'prune.scope={prune_cfg.scope!r} ranks {max(sizes)} weights at once, more than '
        f"{_MAX_GROUP} (int32 counts): use prune.scope='layer'."
      )
    return PruneState(jnp.zeros((), jnp.int32), masks, tx.init(params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('Magnitude pruning (training/pruning.py) needs params in tx.update.')
    step = state.count

    def recompute():
      sparsity = sparsity_at(step, prune_cfg, total_steps)
      return _mask_tree(params, masks_for(params, sparsity, prune_cfg.scope, final))

    due = update_due(step, prune_cfg, total_steps)
    masks = jax.lax.cond(due, recompute, lambda: state.masks)
    keep = lambda m, g: g if _is_masked_node(m) else jnp.where(m, g, jnp.zeros_like(g))  # noqa: E731
    grads = jax.tree.map(keep, masks, updates, is_leaf=_is_masked_node)
    inner, inner_state = tx.update(grads, state.inner_state, params)

    def zero_pruned(m, u, p):  # p + (-p) is exactly 0: the pruned weight ends at 0.
      return u if _is_masked_node(m) else jnp.where(m, u, -p.astype(u.dtype))

    updates = jax.tree.map(zero_pruned, masks, inner, params, is_leaf=_is_masked_node)
    return updates, PruneState(optax.safe_int32_increment(step), masks, inner_state)

  return optax.GradientTransformation(init, update)


def zeros_in_pruned(params) -> tuple[jax.Array, int]:
  """(zero weights, weights) over the pruned matrices of `params` (jittable)."""
  named = _named(params)
  zeros = sum(jnp.sum(x == 0, dtype=jnp.int32) for x in named.values())
  return zeros, sum(x.size for x in named.values())


def achieved_sparsity(params) -> float:
  """The fraction of the pruned matrices' weights that are exactly zero."""
  zeros, total = zeros_in_pruned(params)
  return float(zeros) / max(total, 1)


def sparsity_by_matrix(params) -> dict[str, float]:
  """{pruned matrix name: its fraction of exact zeros} (global scope spreads unevenly)."""
  return {n: float(jnp.mean(x == 0)) for n, x in _named(params).items()}
