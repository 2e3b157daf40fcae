"""Gradient accumulation: a batch split into microbatches trains exactly as the whole batch."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import heads, transformer
from objectives.shared import metrics as metrics_lib
from objectives.shared import token_lm
from training import harness, partitioning
from training import state as state_lib
from training.trainer import check_loss_terms

VOCAB, LENGTH, BATCH = 64, 16, 32
CFG = transformer.TransformerConfig(
  vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, mlp_dim=64, max_len=LENGTH,
  dropout_rate=0.0, attention_dropout_rate=0.0,
)  # fmt: skip


def _batch(seed: int) -> dict:
  """Padding-heavy rows: row r keeps only its first 1 + r % 13 tokens, so microbatches
  hold very different numbers of predicted tokens and a mean of their means is not the
  batch mean."""
  rng = np.random.default_rng(seed)
  kept = 1 + np.arange(BATCH) % 13
  real = np.arange(LENGTH)[None, :] < kept[:, None]  # [batch, length]
  tokens = rng.integers(5, VOCAB, (BATCH, LENGTH))
  return {
    'inputs': np.where(real, tokens, 0).astype(np.int32),
    'targets': rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
    'weights': (real & (rng.random((BATCH, LENGTH)) < 0.5)).astype(np.float32),
    'segment_ids': real.astype(np.int32),
    'positions': np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH)).astype(np.int32),
  }


def _mesh(data: int):
  cfg = types.SimpleNamespace(data=data, fsdp=1, tensor=1)
  return partitioning.make_mesh(cfg, devices=jax.devices()[:data])


@functools.cache
def _trained(num_microbatches: int, optimizer: str = 'adamw', data: int = 4, steps: int = 3):
  """Losses and params after `steps` steps of a tiny BERT on `data` devices."""
  model = heads.MaskedLM(CFG)
  tx = optax.adamw(3e-3, eps=1e-6) if optimizer == 'adamw' else optax.sgd(0.5)
  mesh, rules = _mesh(data), partitioning.logical_rules('fsdp_tp')
  state, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=0, seq_len=LENGTH)
  sharding = partitioning.batch_sharding(mesh)
  step = state_lib.jit_train_step(
    shardings, sharding, mesh=mesh, rules=rules, model=model, loss_fn=token_lm.loss_fn,
    tx=tx, seed=0, num_microbatches=num_microbatches,
  )  # fmt: skip
  losses = []
  for _ in range(steps):
    state, metrics = step(state, partitioning.global_batch(_batch(0), sharding))
    values = metrics_lib.summarize(metrics)
    check_loss_terms(values, 'objectives.mlm')
    losses.append(values['loss'])
  return np.asarray(losses), jax.device_get(state.params)


@pytest.mark.parametrize('num_microbatches', [2, 4])
def test_microbatches_train_as_the_whole_batch(num_microbatches):
  want_losses, want_params = _trained(1)
  losses, params = _trained(num_microbatches)
  np.testing.assert_allclose(losses, want_losses, rtol=0, atol=1e-5)
  assert losses[-1] < losses[0]
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(want_params), strict=True):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_a_mean_of_microbatch_means_would_differ():
  """The rows above make the naive accumulation measurably wrong, so the test above bites."""
  model = heads.MaskedLM(CFG)
  params = model.init(jax.random.key(0), *model.init_inputs(LENGTH)[:3])['params']
  batch = _batch(0)
  loss_fn = functools.partial(token_lm.loss_fn, model=model)
  grad = jax.jit(jax.grad(lambda p, b: loss_fn(p, b, None)[0]))
  whole = grad(params, batch)
  halves = [jax.tree.map(lambda x, i=i: x[i::2], batch) for i in range(2)]
  naive = jax.tree.map(lambda a, b: (a + b) / 2, *(grad(params, h) for h in halves))
  pairs = zip(jax.tree.leaves(whole), jax.tree.leaves(naive), strict=True)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
  assert diff > 1e-3


def test_sgd_updates_match_too():
  """SGD applies the gradient itself (no normalization by Adam), so a wrong scale shows."""
  want_losses, want_params = _trained(1, 'sgd', steps=2)
  losses, params = _trained(4, 'sgd', steps=2)
  np.testing.assert_allclose(losses, want_losses, rtol=0, atol=1e-5)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(want_params), strict=True):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def _two_term_loss(params, batch, rng, *, model, declared=True):
  """A loss of two differently weighted means (MLM-like + a per-row term), like BERT's
  MLM + NSP; the undeclared variant hides its second term from `loss_terms`."""
  logits = model.apply({'params': params}, batch['inputs'], batch['segment_ids'])
  first, out = metrics_lib.token_cross_entropy(logits, batch['targets'], batch['weights'])
  rows = (batch['segment_ids'][:, 0] > 0).astype(jnp.float32) * (batch['inputs'][:, 0] % 2)
  row_sum = jnp.sum(jnp.mean(logits[:, 0].astype(jnp.float32) ** 2, -1) * rows)
  second = row_sum / jnp.maximum(jnp.sum(rows), 1.0)
  out['row/loss'] = (row_sum, jnp.sum(rows))
  return first + 0.5 * second, out


@pytest.mark.parametrize('declared', [True, False])
def test_loss_terms_make_a_combined_loss_exact_or_fail_loudly(declared):
  model = heads.MaskedLM(CFG)
  params = model.init(jax.random.key(0), *model.init_inputs(LENGTH)[:3])['params']
  batch = _batch(1)
  loss_fn = functools.partial(_two_term_loss, model=model)
  terms = {'loss': 1.0, 'row/loss': 0.5} if declared else {'loss': 1.0}
  whole = jax.jit(jax.grad(lambda p: loss_fn(p, batch, None)[0]))(params)
  mesh = _mesh(4)
  with jax.set_mesh(mesh):
    grads, metrics = jax.jit(
      functools.partial(
        state_lib.accumulate_gradients, loss_fn, num_microbatches=4, loss_terms=terms
      )
    )(params, batch, jax.random.key(0))
  values = metrics_lib.summarize(metrics)
  if declared:
    check_loss_terms(values, 'test')
    for got, want in zip(*map(jax.tree.leaves, (grads, whole)), strict=True):
      np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  else:
    with pytest.raises(ValueError, match='loss_terms'):
      check_loss_terms(values, 'test')


def _coupled_loss(params, batch, rng, *, model):
  """token_lm's loss whose weight reads the logits (x 0): no longer the batch's alone."""
  loss, metrics = token_lm.loss_fn(params, batch, rng, model=model)
  logits = model.apply({'params': params}, *(batch[k] for k in token_lm.MODEL_INPUTS))
  total, weight = metrics['loss']
  return loss, dict(metrics, loss=(total, weight + 0.0 * jnp.sum(logits)))


def test_the_weights_pass_costs_no_second_forward():
  """The first scan keeps only the metrics' weights, which read only the batch: XLA
  drops the model from it. (XLA's cost analysis counts a loop body once, so a step of m
  microbatches reports ~1/m of the whole-batch step's FLOPs; a weights pass that kept
  the forward would add a third of that.)"""
  model = heads.MaskedLM(CFG)
  params = model.init(jax.random.key(0), *model.init_inputs(LENGTH)[:3])['params']
  batch = jax.tree.map(jnp.asarray, _batch(0))

  def flops(loss_fn, m):
    loss_fn = functools.partial(loss_fn, model=model)
    if m == 1:
      fn = jax.grad(lambda p, b, r: loss_fn(p, b, r)[0])
    else:
      fn = functools.partial(
        state_lib.accumulate_gradients, loss_fn, num_microbatches=m, loss_terms={'loss': 1.0}
      )
    with jax.set_mesh(_mesh(1)):
      compiled = jax.jit(fn).lower(params, batch, jax.random.key(0)).compile()
    return compiled.cost_analysis()['flops']

  whole = flops(token_lm.loss_fn, 1)
  assert flops(token_lm.loss_fn, 2) < 1.05 * whole / 2  # Measured: 0.502 x whole.
  # The control: weights that read the model keep its forward in the first scan.
  assert flops(_coupled_loss, 2) > 1.2 * whole / 2


def test_a_batch_that_does_not_split_is_refused():
  with pytest.raises(ValueError, match='multiple of num_microbatches x 4 = 12'):
    harness.check_microbatches(32, 3, _mesh(4))
