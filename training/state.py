"""The train state, initialized directly sharded, and the jitted train step."""

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from training import partitioning


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimizer steps taken.
  params: dict
  opt_state: optax.OptState


def init_inputs(model, seq_len: int) -> tuple:
  """Example arguments of `model.init`: the model's own `init_inputs(seq_len)` when it
  defines one (encoder-decoders, ELMo), else (inputs, segment_ids, positions)."""
  if hasattr(model, 'init_inputs'):
    return model.init_inputs(seq_len)
  tokens = jnp.ones((1, seq_len), jnp.int32)
  return tokens, tokens, tokens


def _boxed_init(model, tx, seq_len: int):
  """rng -> TrainState whose leaves are boxed in nn.LogicallyPartitioned (names kept)."""

  def init(rng):
    params = model.init(rng, *init_inputs(model, seq_len))['params']
    opt_state = fit_optimizer_names(tx.init(params), params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)

  return init


def _is_box(x) -> bool:
  return isinstance(x, nn.Partitioned)


def fit_optimizer_names(opt_state, params):
  """The optimizer state's logical names, fitted to the shapes the optimizer gave them.

  An optimizer's state boxes inherit their parameter's names whatever their shape.
  Adam's moments have the parameter's shape and keep them; Adafactor's factored row
  and column statistics drop one axis of it, so they keep the names of the axes left
  (a [embed, mlp] kernel's row statistics are [embed]: sharded as the kernel's rows);
  a placeholder of another shape ((1,): the statistics a parameter does not use) is
  replicated. The parameter of a state leaf is the one whose path ends its path.
  """
  shapes = {
    tuple(path): box.value.shape
    for path, box in jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_box)[0]
  }

  def fit(path, leaf):
    if not _is_box(leaf) or not hasattr(leaf.value, 'shape'):
      return leaf  # Unnamed, or a masked optimizer's empty placeholder.
    shape = tuple(leaf.value.shape)
    param = next((shapes[path[k:]] for k in range(len(path)) if path[k:] in shapes), None)
    if param is not None and shape == tuple(param):
      return leaf
    if param is not None and len(shape) == len(param) - 1:
      for axis in range(len(param)):
        if shape == tuple(param[:axis]) + tuple(param[axis + 1 :]):
          return leaf.replace(names=leaf.names[:axis] + leaf.names[axis + 1 :])
    return leaf.replace(names=(None,) * len(shape))

  return jax.tree_util.tree_map_with_path(fit, opt_state, is_leaf=_is_box)


def abstract_state(model, tx, *, mesh, rules, seq_len: int):
  """ShapeDtypeStructs carrying their shardings (a checkpoint's restore target).

  Returns:
    (abstract state, shardings): the state's shapes and a matching tree of NamedShardings.
  """
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(_boxed_init(model, tx, seq_len), jax.random.key(0))
    shardings = partitioning.logical_shardings(boxed, mesh, rules)
  shapes = nn.unbox(boxed)
  return jax.tree.map(
    lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
  ), shardings


def create(model, tx, *, mesh, rules, seed: int, seq_len: int):
  """Initializes the state on the mesh, each leaf born sharded (no full copy anywhere).

  Returns:
    (state, shardings): the TrainState and a matching tree of NamedShardings.
  """
  _, shardings = abstract_state(model, tx, mesh=mesh, rules=rules, seq_len=seq_len)
  init_boxed = _boxed_init(model, tx, seq_len)
  init = jax.jit(lambda rng: nn.unbox(init_boxed(rng)), out_shardings=shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = init(jax.random.key(seed))
  return state, shardings


def train_step(
  state: TrainState,
  batch: dict,
  *,
  model,
  loss_fn,
  tx,
  seed: int,
  num_microbatches: int = 1,
  loss_terms: dict[str, float] | None = None,
):
  """One optimizer step. Dropout randomness is derived from (seed, step) (and the
  microbatch's index when the batch is split).

  With `num_microbatches` = m > 1 the global batch is split into m microbatches inside
  the step (`accumulate_gradients`) and the optimizer sees the whole batch's gradient.
  """
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  loss_fn = functools.partial(loss_fn, model=model)
  if num_microbatches == 1:
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
  else:
    grads, metrics = accumulate_gradients(
      loss_fn, state.params, batch, rng, num_microbatches, loss_terms or {'loss': 1.0}
    )
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=(optax.tree.norm(grads), jnp.float32(1.0)))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


# The largest disagreement (relative) between an objective's loss and the sum of its
# declared loss terms that accumulation accepts: float32 rounding, not a wrong contract.
LOSS_TERMS_TOLERANCE = 1e-4
LOSS_TERMS_ERROR = 'microbatch/loss_terms_error'


def split_microbatches(batch: dict, num_microbatches: int) -> dict:
  """[batch, ...] -> [m, batch / m, ...], microbatch i taking rows i, i + m, i + 2m, ...:
  every device's block of rows holds a share of each microbatch, so a microbatch is
  spread over all data-parallel devices like the batch (a contiguous split would put
  each microbatch on 1/m of them)."""

  def split(x):
    rows = x.shape[0] // num_microbatches
    x = x.reshape(rows, num_microbatches, *x.shape[1:]).swapaxes(0, 1)
    spec = PartitionSpec(None, partitioning.BATCH_AXES)
    return jax.lax.with_sharding_constraint(x, spec)

  return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn, params, batch, rng, num_microbatches: int, loss_terms):
  """The gradient of the whole batch's loss, summed over microbatches with `lax.scan`.

  The loss is sum_t c_t S_t / W_t over the objective's `loss_terms` ((sum, weight)
  metrics t with coefficients c_t, objectives/api.py), and S_t, W_t are sums over rows.
  So each microbatch contributes sum_t c_t S_t,i / W_t with W_t the *whole batch's*
  weight: the summed gradient is the big batch's, not a mean of microbatch means
  (which would weight a padding-heavy microbatch's tokens more). The W_t come from a
  first scan that keeps only the metrics' weights: they depend on the batch alone, so
  XLA removes the model from it.

  Returns:
    (grads, metrics): metrics summed over microbatches (still (sum, weight) pairs), plus
    LOSS_TERMS_ERROR: how far the objective's own loss is from its declared terms on
    the microbatches (the trainer raises when the contract is broken).
  """
  micro = split_microbatches(batch, num_microbatches)
  index = jnp.arange(num_microbatches)

  def weights_of(_, xs):
    mb, i = xs
    _, metrics = loss_fn(params, mb, jax.random.fold_in(rng, i))
    return None, {name: metrics[name][1] for name in loss_terms}

  _, weights = jax.lax.scan(weights_of, None, (micro, index))
  totals = {name: jnp.sum(w) for name, w in weights.items()}
  totals = {name: jnp.where(w > 0, w, 1.0) for name, w in totals.items()}

  def batch_normalized(p, mb, mb_rng):
    loss, metrics = loss_fn(p, mb, mb_rng)
    normalized = sum(c * metrics[t][0] / totals[t] for t, c in loss_terms.items())
    own = sum(c * metrics[t][0] / jnp.where(metrics[t][1] > 0, metrics[t][1], 1.0)
              for t, c in loss_terms.items())  # fmt: skip
    error = jnp.abs(loss - own) / jnp.maximum(jnp.abs(loss), 1.0)
    return normalized, dict(metrics, **{LOSS_TERMS_ERROR: (error, jnp.float32(1.0))})

  grad_fn = jax.grad(batch_normalized, has_aux=True)

  def step(acc, xs):
    mb, i = xs
    grads, metrics = grad_fn(params, mb, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, acc, grads), metrics

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, metrics = jax.lax.scan(step, zeros, (micro, index))
  metrics = jax.tree.map(lambda x: jnp.sum(x, axis=0), metrics)
  return grads, metrics


def eval_step(params, batch: dict, *, model, loss_fn):
  """Metrics of one evaluation batch, plus the count of real (non-padding) rows."""
  _, metrics = loss_fn(params, batch, None, model=model)
  rows = jnp.sum(jnp.any(batch['segment_ids'] > 0, axis=-1)).astype(jnp.float32)
  return dict(metrics, rows=(rows, jnp.float32(1.0)))


def predict_step(params, batch: dict, *, model, predict_fn):
  """A task objective's per-row outputs, with each row's example id (-1: padding)."""
  return dict(predict_fn(params, batch, model=model), example_id=batch['example_id'])


def jit_train_step(state_shardings, batch_shardings, *, mesh, rules, **kwargs):
  """The train step jitted with explicit shardings and the state donated."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  step = jax.jit(
    functools.partial(train_step, **kwargs),
    in_shardings=(state_shardings, batch_shardings),
    out_shardings=(state_shardings, replicated),
    donate_argnums=0,
  )
  return _under_rules(step, mesh, rules)


def jit_eval_step(param_shardings, batch_shardings, *, mesh, rules, step_fn=eval_step, **kwargs):
  """`eval_step` (or `predict_step`) jitted; its outputs replicated on every device."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  step = jax.jit(
    functools.partial(step_fn, **kwargs),
    in_shardings=(param_shardings, batch_shardings),
    out_shardings=replicated,
  )
  return _under_rules(step, mesh, rules)


def _under_rules(fn, mesh, rules):
  """Calls `fn` with the mesh and logical rules active (for the activations' constraints)."""

  def wrapped(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return fn(*args)

  def lower(*args):
    """Ahead-of-time lowering (`.compile()` it), e.g. to time compilation."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return fn.lower(*args)

  wrapped.lower = lower
  return wrapped
