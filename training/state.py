"""The train state, initialized directly sharded, and the jitted train step."""

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

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
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  return init


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


def train_step(state: TrainState, batch: dict, *, model, loss_fn, tx, seed: int):
  """One optimizer step. Dropout randomness is derived from (seed, step)."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  grad_fn = jax.value_and_grad(functools.partial(loss_fn, model=model), has_aux=True)
  (_, metrics), grads = grad_fn(state.params, batch, rng)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=(optax.tree.norm(grads), jnp.float32(1.0)))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


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
