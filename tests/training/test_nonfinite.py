"""The train step's guard: a non-finite (or spiking) step leaves params and optimizer state
as they were and says so in its metrics; normal steps are computed exactly as before; a
diverged run is stopped by the host-side counter of skipped steps in a row."""

import functools
import json
import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import quickstart
from models import heads, presets
from objectives.shared import metrics as metrics_lib
from objectives.shared import token_lm
from training import checkpointing, guard, integrity, partitioning, trainer
from training import state as state_lib

VOCAB, LENGTH, BATCH = 128, 32, 16
NONFINITE, SPIKE = state_lib.SKIPPED_NONFINITE, state_lib.SKIPPED_SPIKE


def _batch(seed: int, loss_scale: float = 1.0, scaled_row: int = 0) -> dict:
  """Random MLM-like rows; `loss_scale` multiplies the loss (NaN poisons the step) when
  set on row `scaled_row` (rows r, r + m, ... form microbatch r % m)."""
  rng = np.random.default_rng(seed)
  scale = np.ones(BATCH, np.float32)
  scale[scaled_row] = loss_scale
  return {
    'inputs': rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
    'targets': rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
    'weights': (rng.random((BATCH, LENGTH)) < 0.3).astype(np.float32),
    'segment_ids': np.ones((BATCH, LENGTH), np.int32),
    'positions': np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH)).astype(np.int32),
    'loss_scale': scale,
  }


def scaled_loss(params, batch, rng, *, model):
  """token_lm's loss (and its `loss` metric) times 1 + the sum of (`loss_scale` - 1) over
  the rows: a NaN in any row makes the loss and every gradient NaN, a large scale a loss
  spike. (Not the rows' max: XLA's cross-device max on CPU drops a NaN.)"""
  batch = dict(batch)
  scale = 1.0 + jnp.sum(batch.pop('loss_scale') - 1.0)
  loss, metrics = token_lm.loss_fn(params, batch, rng, model=model)
  total, weight = metrics['loss']
  return loss * scale, dict(metrics, loss=(total * scale, weight))


@functools.cache
def _setup():
  """bert-tiny (no dropout: a skipped step must leave no trace) on a 4 x 2 (data, fsdp)
  mesh of the 8 emulated devices; Adam with clipping and an injectable learning rate."""
  model = heads.MaskedLM(
    presets.get_config(
      'bert-tiny', vocab_size=VOCAB, max_len=LENGTH, dropout_rate=0.0, attention_dropout_rate=0.0
    )
  )
  mesh = partitioning.make_mesh(types.SimpleNamespace(data=4, fsdp=2, tensor=1))
  rules = partitioning.logical_rules('fsdp_tp')
  tx = optax.chain(
    optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3)
  )
  _, shardings = state_lib.abstract_state(model, tx, mesh=mesh, rules=rules, seq_len=LENGTH)
  return types.SimpleNamespace(
    model=model,
    mesh=mesh,
    rules=rules,
    tx=tx,
    shardings=shardings,
    batch_sharding=partitioning.batch_sharding(mesh),
  )


def _fresh_state():
  s = _setup()
  return state_lib.create(s.model, s.tx, mesh=s.mesh, rules=s.rules, seed=0, seq_len=LENGTH)[0]


@functools.cache
def _step(num_microbatches: int = 1, loss_spike_zscore: float = 0.0):
  s = _setup()
  return state_lib.jit_train_step(
    s.shardings, s.batch_sharding, mesh=s.mesh, rules=s.rules, model=s.model,
    loss_fn=scaled_loss, tx=s.tx, seed=0, num_microbatches=num_microbatches,
    loss_spike_zscore=loss_spike_zscore, spike_warmup_steps=3,
  )  # fmt: skip


@functools.cache
def _unguarded_step():
  """The step as it was before the guard: gradient, optimizer update, nothing else."""
  s = _setup()

  def step(state, batch):
    loss_fn = functools.partial(scaled_loss, model=s.model)
    rng = jax.random.fold_in(jax.random.key(0), state.step)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = s.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return state, dict(metrics, grad_norm=(optax.tree.norm(grads), jnp.float32(1.0)))

  replicated = jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec())
  jitted = jax.jit(
    step, in_shardings=(s.shardings, s.batch_sharding), out_shardings=(s.shardings, replicated)
  )

  def run(state, batch):
    with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
      return jitted(state, batch)

  return run


def _run(step, state, batches):
  """Runs `step` over host `batches`; returns (state, per-step summarized metrics, host
  copies of (params, opt_state) before each step)."""
  s, values, before = _setup(), [], []
  for batch in batches:
    before.append(jax.device_get((state.params, state.opt_state)))
    state, metrics = step(state, partitioning.global_batch(batch, s.batch_sharding))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(metrics))
    values.append(metrics_lib.summarize(metrics))
  return state, values, before


def _assert_trees_equal(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def _host(state):
  return jax.device_get((state.params, state.opt_state))


def test_a_nan_step_is_skipped_as_if_its_batch_was_not_there():
  step = _step()
  state, values, before = _run(step, _fresh_state(), [_batch(0), _batch(1, math.nan, 5)])
  assert [v[NONFINITE] for v in values] == [0.0, 1.0]
  assert values[1]['loss'] == values[1]['grad_norm'] == 0.0  # Weight 0: no NaN logged.
  _assert_trees_equal(_host(state), before[1])  # Params and Adam state untouched.
  assert int(state.step) == 2  # The batch was consumed.
  stats = jax.device_get(state.loss_stats)
  assert int(stats.count) == 1 and np.isfinite(stats.mean) and np.isfinite(stats.var)

  state, values, _ = _run(step, state, [_batch(2)])
  assert values[0][NONFINITE] == 0.0 and np.isfinite(values[0]['loss'])
  # Without dropout, skipping the poisoned batch leaves exactly the run that never had it.
  clean, clean_values, _ = _run(step, _fresh_state(), [_batch(0), _batch(2)])
  assert values[0]['loss'] == clean_values[1]['loss']
  _assert_trees_equal(_host(state), _host(clean))


@pytest.mark.default_emitters
def test_normal_steps_are_bit_identical_to_the_unguarded_step():
  batches = [_batch(i) for i in range(3)] + [_batch(3, 10.0)]  # A 10x loss: still applied.
  guarded, values, _ = _run(_step(), _fresh_state(), batches)
  plain, plain_values, _ = _run(_unguarded_step(), _fresh_state(), batches)
  _assert_trees_equal(_host(guarded), _host(plain))
  for got, want in zip(values, plain_values, strict=True):
    assert got[NONFINITE] == got[SPIKE] == 0.0
    assert got['loss'] == want['loss'] and got['grad_norm'] == want['grad_norm']
  assert values[-1]['loss'] > 5 * values[0]['loss']
  assert values[2]['loss'] < values[0]['loss']  # It trains.


def test_a_poisoned_microbatch_skips_the_accumulated_step():
  step = _step(num_microbatches=2)
  state, values, before = _run(step, _fresh_state(), [_batch(0), _batch(1, math.nan, 3)])
  assert [v[NONFINITE] for v in values] == [0.0, 1.0]
  _assert_trees_equal(_host(state), before[1])
  state, values, _ = _run(step, state, [_batch(2)])
  assert values[0][NONFINITE] == 0.0
  # The accumulated run still trains as the whole-batch run (test_accumulation.py).
  whole, whole_values, _ = _run(_step(), _fresh_state(), [_batch(0), _batch(2)])
  np.testing.assert_allclose(values[0]['loss'], whole_values[1]['loss'], rtol=0, atol=1e-5)
  # Two microbatches sum the gradient in another order than the whole batch; Adam divides
  # each element by its own scale, so the rounding of a tiny gradient can move a parameter
  # by a small part of a step (measured: 1.005e-5 on 1 element of 65,536). A tenth of one
  # step (learning rate 1e-3) still fails a skipped or doubled update.
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(whole.params), strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-4)


def _with_learning_rate(state, learning_rate: float):
  """The state with its injected Adam learning rate replaced (same sharding)."""
  clip, adam = state.opt_state
  old = adam.hyperparams['learning_rate']
  new = jax.device_put(jnp.asarray(learning_rate, old.dtype), old.sharding)
  adam = adam._replace(hyperparams=dict(adam.hyperparams, learning_rate=new))
  return state.replace(opt_state=(clip, adam))


def test_divergence_skips_every_update_and_the_counter_stops_the_run():
  """Learning rate 1e6: the loss explodes, then turns NaN; from then on every update is
  skipped (the params that give NaN stay), and the counter reaches max_bad_steps."""
  step, counter = _step(), guard.BadStepCounter(max_bad_steps=4)
  state = _with_learning_rate(_fresh_state(), 1e6)
  losses, flags, params = [], [], []
  for i in range(12):
    state, values, _ = _run(step, state, [_batch(i)])
    losses.append(values[0]['loss'])
    flags.append(values[0][NONFINITE])
    params.append(jax.device_get(state.params))
    if counter.update(flags[-1]) >= counter.max_bad_steps:
      break
  first = flags.index(1.0)
  assert first >= 1 and losses[first - 1] > 100 * losses[0]  # Exploded first, then NaN.
  assert flags[first:] == [1.0] * counter.max_bad_steps
  for kept in params[first:]:
    _assert_trees_equal(kept, params[first - 1])
  with pytest.raises(guard.TrainingDivergedError, match=rf'steps {first + 1}..{first + 4} '):
    counter.check(step=len(flags))


def test_a_loss_spike_is_skipped_when_asked_and_only_then():
  step = _step(loss_spike_zscore=3.0)  # Spikes count after 3 applied steps (_step).
  batches = [_batch(0), _batch(1), _batch(2), _batch(3), _batch(4, 10.0), _batch(5)]
  state, values, before = _run(step, _fresh_state(), batches)
  assert [v[SPIKE] for v in values] == [0, 0, 0, 0, 1, 0]
  assert [v[NONFINITE] for v in values] == [0] * 6
  assert values[4]['loss'] == 0.0  # Excluded from the logged mean.
  _assert_trees_equal(before[5], before[4])  # The spike's update was not applied.
  assert int(state.loss_stats.count) == 5 and int(state.step) == 6
  # Off (the default), the same 10x loss is applied: test_normal_steps_are_bit_identical...
  # and a 10x loss during the warm-up is too.
  early, values, _ = _run(step, _fresh_state(), [_batch(0), _batch(4, 10.0)])
  assert values[1][SPIKE] == 0.0 and int(early.loss_stats.count) == 2


def test_running_loss_stats_are_exact_then_exponential():
  losses = np.array([4.0, 5.0, 3.5, 4.5, 6.0], np.float32)
  stats = state_lib.LossStats.zeros()
  for i, loss in enumerate(losses):
    stats = state_lib.update_loss_stats(stats, jnp.float32(loss))
    np.testing.assert_allclose(stats.mean, losses[: i + 1].mean(), rtol=1e-6)
    np.testing.assert_allclose(stats.var, losses[: i + 1].var(), rtol=1e-5)
  # Past 1 / (1 - decay) losses the weight of a new one stays 1 - decay.
  warm = state_lib.LossStats(count=jnp.int32(1000), mean=jnp.float32(4.0), var=jnp.float32(1.0))
  after = state_lib.update_loss_stats(warm, jnp.float32(5.0), decay=0.99)
  np.testing.assert_allclose(after.mean, 4.01, rtol=1e-6)
  np.testing.assert_allclose(after.var, 0.99 * (1.0 + 0.01), rtol=1e-6)
  # A finite loss whose square overflows float32 leaves them finite (and unchanged).
  huge = state_lib.update_loss_stats(warm, jnp.float32(3e30))
  assert int(huge.count) == 1000 and float(huge.mean) == 4.0 and float(huge.var) == 1.0


@pytest.mark.parametrize(
  'count, loss, zscore, spike',
  [(10, 7.1, 3.0, True), (10, 6.9, 3.0, False), (2, 100.0, 3.0, False), (10, 100.0, 0.0, False)],
)
def test_a_spike_is_z_running_deviations_above_the_running_mean(count, loss, zscore, spike):
  stats = state_lib.LossStats(count=jnp.int32(count), mean=jnp.float32(4.0), var=jnp.float32(1.0))
  got = state_lib.is_loss_spike(stats, jnp.float32(loss), zscore, warmup_steps=3)
  assert bool(got) is spike


def test_the_counter_counts_skipped_steps_in_a_row():
  counter = guard.BadStepCounter(max_bad_steps=3)
  counts = [counter.update(f) for f in (1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0)]
  assert counts == [1, 2, 0, 1, 2, 0, 1, 2]
  counter.check(step=8)  # 2 < 3: the run goes on.
  assert counter.update(jnp.float32(1.0)) == 3 and counter.exceeded
  with pytest.raises(guard.TrainingDivergedError, match=r'steps 7..9 \(3 in a row'):
    counter.check(step=9)
  with pytest.raises(ValueError, match='max_bad_steps=0'):
    guard.BadStepCounter(0)


def test_the_flag_of_a_step_and_the_figures_of_an_all_skipped_interval():
  one, zero = (jnp.float32(1.0), jnp.float32(1.0)), (jnp.float32(0.0), jnp.float32(1.0))
  for flags, skipped in (((zero, one), 1), ((one, zero), 1), ((zero, zero), 0)):
    flag = guard.skipped_flag(dict(zip((NONFINITE, SPIKE), flags, strict=True)))
    assert guard.BadStepCounter(5).update(flag) == skipped
  partly = {'loss': 3.0, NONFINITE: 0.5, SPIKE: 0.25}
  assert guard.interval_figures(partly) == partly
  skipped = guard.interval_figures({'loss': 0.0, 'grad_norm': 0.0, NONFINITE: 0.75, SPIKE: 0.25})
  assert math.isnan(skipped['loss']) and math.isnan(skipped['grad_norm'])
  assert skipped[NONFINITE] == 0.75 and skipped[SPIKE] == 0.25


def test_the_training_loop_stops_a_diverged_run_with_no_nan_checkpoint(tmp_path, spm_path):
  """trainer.train end to end at learning rate 1e6: the updates go non-finite, each is
  skipped, the run stops after max_bad_steps in a row naming the steps, metrics.jsonl
  stays strict JSON, and every checkpoint saved holds finite params."""
  config = quickstart.get_config()
  config.batch_size, config.seq_len, config.total_steps = 8, 32, 30
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 1, 0, 2
  config.optimizer.learning_rate, config.optimizer.warmup_ratio = 1e6, 0.0
  config.optimizer.clip_norm, config.max_bad_steps = 0.0, 3
  config.peak_flops_per_device, config.data.tokenizer_path = 1e9, spm_path
  workdir = str(tmp_path / 'run')
  with pytest.raises(guard.TrainingDivergedError, match=r'\(3 in a row, max_bad_steps=3\)'):
    trainer.train(config, workdir)
  with open(f'{workdir}/metrics.jsonl') as f:
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(c)) for line in f]
  assert records and max(r['step'] for r in records) < config.total_steps
  assert any(r['skipped_nonfinite'] == 1.0 for r in records)
  reader = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  for step in reader.all_steps():
    state, _, _ = reader.restore_as_saved(step)
    assert integrity.state_record(state)[1] == [], step  # No non-finite leaf.
  reader.close()
