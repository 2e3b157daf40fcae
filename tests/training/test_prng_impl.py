"""config.prng_impl: dropout's generator in the train step. Each one is deterministic in
(seed, step), so a run resumed from a checkpoint draws what the uninterrupted run draws,
and the generators draw differently."""

import dataclasses

import jax
import numpy as np
import optax

from models import heads
from objectives.shared import token_lm
from tests.training.test_accumulation import CFG, LENGTH, _batch, _mesh
from training import config_checks, partitioning
from training import state as state_lib

DROPPED = dataclasses.replace(CFG, dropout_rate=0.1, attention_dropout_rate=0.1)


def _params(state) -> list[np.ndarray]:
  return jax.tree.leaves(jax.device_get(state.params))


def _runs(prng_impl: str):
  """Params after 3 steps, uninterrupted and resumed: after step 1 the state goes to the
  host and back (a checkpoint read by a new process) before steps 2 and 3."""
  model, tx = heads.MaskedLM(DROPPED), optax.adamw(3e-3)
  mesh, rules = _mesh(2), partitioning.logical_rules('fsdp_tp')
  start, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=0, seq_len=LENGTH)
  sharding = partitioning.batch_sharding(mesh)
  step = state_lib.jit_train_step(
    shardings, sharding, mesh=mesh, rules=rules, model=model, loss_fn=token_lm.loss_fn,
    tx=tx, seed=0, prng_impl=prng_impl,
  )  # fmt: skip
  batches = [partitioning.global_batch(_batch(i), sharding) for i in range(3)]
  host_start = jax.device_get(start)
  runs = []
  for resume_after in (None, 1):
    state = jax.device_put(host_start, shardings)
    for i, batch in enumerate(batches):
      if i == resume_after:
        state = jax.device_put(jax.device_get(state), shardings)
      state, _ = step(state, batch)
    runs.append(_params(state))
  return runs


def test_each_generator_resumes_exactly_and_they_draw_differently():
  assert config_checks.choices()['prng_impl'] == state_lib.PRNG_IMPLS
  finals = {}
  for prng_impl in ('threefry2x32', 'rbg'):
    uninterrupted, resumed = _runs(prng_impl)
    for a, b in zip(uninterrupted, resumed, strict=True):
      np.testing.assert_array_equal(a, b)
    finals[prng_impl] = uninterrupted
  pairs = zip(finals['threefry2x32'], finals['rbg'], strict=True)
  assert any((a != b).any() for a, b in pairs)  # Different dropout masks, different steps.
