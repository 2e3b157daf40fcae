"""The train state, initialized directly sharded, and the jitted train step.

The step guards its update: a step whose loss or gradient norm is not finite, or (with
`loss_spike_zscore` > 0) whose loss spikes far above the running loss, leaves the
params and optimizer state as they were (training/guard.py counts such steps in a row).
"""

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from objectives import api
from training import partitioning

# Per-step metrics of the guard, (1.0 or 0.0, 1.0) each step: summed over a log interval
# they give the fraction of its steps whose update was skipped, and read for one step
# they are its flag (training/guard.py). A non-finite step is not also counted a spike.
SKIPPED_NONFINITE = 'skipped_nonfinite'
SKIPPED_SPIKE = 'skipped_spike'
SKIP_METRICS = (SKIPPED_NONFINITE, SKIPPED_SPIKE)

# The running loss of the spike guard: an exact mean and variance over the first applied
# steps, then an exponential moving average with this decay (a window of ~100 steps).
LOSS_STATS_DECAY = 0.99
# Applied steps the running loss must have seen before a spike can be skipped.
SPIKE_WARMUP_STEPS = 20
# The generators dropout's key can use (config.prng_impl; jax.random.key's `impl`; each
# dropout draws its two hash seeds from it, models/dropout.py): JAX's
# threefry (counter-based, the same bits however the step is sharded), XLA's RngBitGenerator
# ('rbg': threefry's key derivation, fast bits) and 'unsafe_rbg' (its key derivation too).
PRNG_IMPLS = ('threefry2x32', 'rbg', 'unsafe_rbg')
DEFAULT_PRNG_IMPL = 'threefry2x32'


@flax.struct.dataclass
class LossStats:
  """Running mean and variance of the losses of applied steps (float32 scalars), kept
  in the state so that a resumed run judges spikes against the same baseline. Kept
  whether or not spikes are skipped, so that turning the guard on at a resume finds it
  warm."""

  count: jax.Array  # int32: applied steps seen.
  mean: jax.Array
  var: jax.Array

  @classmethod
  def zeros(cls) -> 'LossStats':
    return cls(count=jnp.zeros((), jnp.int32), mean=jnp.zeros(()), var=jnp.zeros(()))


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: batches trained on (skipped updates included).
  params: dict
  opt_state: optax.OptState
  loss_stats: LossStats  # Replicated scalars (training/partitioning.logical_shardings).


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
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=opt_state,
      loss_stats=LossStats.zeros(),
    )

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
  teacher_params=None,
  *,
  model,
  loss_fn,
  tx,
  seed: int,
  teacher_model=None,
  num_microbatches: int = 1,
  loss_terms: dict[str, float] | None = None,
  loss_spike_zscore: float = 0.0,
  spike_warmup_steps: int = SPIKE_WARMUP_STEPS,
  prng_impl: str = DEFAULT_PRNG_IMPL,
):
  """One optimizer step. Dropout randomness is derived from (seed, step) (and the
  microbatch's index when the batch is split) with the `prng_impl` generator (PRNG_IMPLS).

  With `num_microbatches` = m > 1 the global batch is split into m microbatches inside
  the step (`accumulate_gradients`) and the optimizer sees the whole batch's gradient.

  The update is guarded: when the loss or the gradient's global norm (after
  accumulation, before the optimizer's clipping) is not finite, or, with
  `loss_spike_zscore` = z > 0 and after `spike_warmup_steps` applied steps, the loss is
  more than z running standard deviations above the running mean (`LossStats`), the
  params, optimizer state and running loss stay as they were. `step` still advances:
  the batch was consumed, and the next step must read the next batch and derive the
  next randomness, as an uninterrupted run does. The optimizer's own count does not
  advance, so its learning-rate schedule lags `step` by the number of skipped updates.
  An applied step computes exactly what an unguarded step computes (the guard selects
  between the new and the old trees).

  With a distillation teacher (`teacher_model`, and its frozen `teacher_params`, an
  argument of their own: training/teacher.py), the loss is called with
  `teacher=api.Teacher(teacher_model, teacher_params)`; the gradient is taken with
  respect to the state's params only, and the teacher is not in the state.

  Returns:
    (state, metrics): the step's (sum, weight) metrics, `grad_norm`, and SKIP_METRICS.
    The metrics of a skipped step have weight 0, so an interval's logged figures are
    means over its applied steps and a NaN never reaches them.
  """
  rng = jax.random.fold_in(jax.random.key(seed, impl=prng_impl), state.step)
  loss_fn = functools.partial(loss_fn, model=model)
  if teacher_model is not None:
    loss_fn = functools.partial(loss_fn, teacher=api.Teacher(teacher_model, teacher_params))
  loss_terms = loss_terms or {'loss': 1.0}
  if num_microbatches == 1:
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
  else:
    grads, metrics = accumulate_gradients(
      loss_fn, state.params, batch, rng, num_microbatches, loss_terms
    )
    loss = _loss_of_terms(metrics, loss_terms)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.tree.norm(grads)
  loss = loss.astype(jnp.float32)
  nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
  spike = ~nonfinite & is_loss_spike(state.loss_stats, loss, loss_spike_zscore, spike_warmup_steps)
  applied = ~(nonfinite | spike)
  new_state = TrainState(
    step=state.step + 1,
    params=_select(applied, params, state.params),
    opt_state=_select(applied, opt_state, state.opt_state),
    loss_stats=_select(applied, update_loss_stats(state.loss_stats, loss), state.loss_stats),
  )
  metrics = dict(metrics, grad_norm=(grad_norm, jnp.float32(1.0)))
  metrics = _select(applied, metrics, jax.tree.map(jnp.zeros_like, metrics))
  one = jnp.float32(1.0)
  metrics[SKIPPED_NONFINITE] = (nonfinite.astype(jnp.float32), one)
  metrics[SKIPPED_SPIKE] = (spike.astype(jnp.float32), one)
  return new_state, metrics


def _select(keep_new, new, old):
  """`new` where the scalar `keep_new` is true, else `old`, leaf by leaf (sharding kept)."""
  return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def _loss_of_terms(metrics: dict, loss_terms: dict[str, float]) -> jax.Array:
  """The batch's loss rebuilt from its summed (sum, weight) loss terms (accumulation)."""
  return sum(
    c * metrics[t][0] / jnp.where(metrics[t][1] > 0, metrics[t][1], 1.0)
    for t, c in loss_terms.items()
  )


def update_loss_stats(stats: LossStats, loss, decay: float = LOSS_STATS_DECAY) -> LossStats:
  """The running loss after one more applied step.

  The weight of the new loss is max(1 / (count + 1), 1 - decay): the exact mean and
  (population) variance while fewer than 1 / (1 - decay) losses were seen, so the
  baseline does not start biased towards 0, then an exponential moving average that
  follows a loss going down during training. A finite loss whose square overflows
  float32 (above ~1e19) leaves the stats as they were: an infinite variance would switch
  the spike guard off for good, and a checkpoint holding it would read as corrupt.
  """
  alpha = jnp.maximum(1.0 / (stats.count.astype(jnp.float32) + 1.0), 1.0 - decay)
  delta = loss - stats.mean
  new = LossStats(
    count=stats.count + 1,
    mean=stats.mean + alpha * delta,
    var=(1.0 - alpha) * (stats.var + alpha * delta * delta),
  )
  return _select(jnp.isfinite(new.mean) & jnp.isfinite(new.var), new, stats)


def is_loss_spike(stats: LossStats, loss, zscore: float, warmup_steps: int) -> jax.Array:
  """Whether `loss` is more than `zscore` running standard deviations above the running
  mean (a bool scalar; always false when `zscore` <= 0 or during the warm-up)."""
  if zscore <= 0:
    return jnp.zeros((), bool)
  warm = stats.count >= warmup_steps
  return warm & (loss - stats.mean > zscore * jnp.sqrt(stats.var))


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


def jit_train_step(
  state_shardings, batch_shardings, *, mesh, rules, teacher_shardings=None, **kwargs
):
  """The train step jitted with explicit shardings and the state donated; with
  `teacher_shardings` it takes the teacher's params as a third argument (not donated)."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  in_shardings = (state_shardings, batch_shardings)
  if teacher_shardings is not None:
    in_shardings += (teacher_shardings,)
  step = jax.jit(
    functools.partial(train_step, **kwargs),
    in_shardings=in_shardings,
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
  """Calls `fn` with the mesh and logical rules active (for the activations' constraints);
  its `.lower` (ahead-of-time lowering, e.g. to time compilation) and `.trace` (the traced
  step's `.jaxpr`, e.g. bench/gemm_floor.py's products) run under them too."""

  def under_rules(call):
    def run(*args):
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return call(*args)

    return run

  wrapped = under_rules(fn)
  wrapped.lower, wrapped.trace = under_rules(fn.lower), under_rules(fn.trace)
  return wrapped
