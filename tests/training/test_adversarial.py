"""Adversarial training (training/adversarial.py): every method's perturbations stay in
their ball and raise the loss; the wrapped loss is the clean loss plus the perturbed one,
its parameter gradient taken with the perturbation held; SMART's divergence and its loss
by hand, from a random start; microbatches train as the whole batch; and a fine-tuning
run through train.py's loop logs the perturbed loss above the clean one."""

import functools
import json
import os
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import config_dict

from configs import glue as glue_config
from evaluation import during_training
from models import heads, input_perturbation, transformer
from objectives import classification
from objectives.shared import metrics as metrics_lib
from tests.training.finetune_runs import tiny, write_sst2
from training import adversarial, harness, partitioning
from training import state as state_lib

VOCAB, LENGTH, BATCH = 48, 12, 8
CFG = transformer.TransformerConfig(
  vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, mlp_dim=64, max_len=LENGTH,
  dropout_rate=0.0, attention_dropout_rate=0.0, init_std=0.2,
)  # fmt: skip
OBJECTIVE = classification.Classification(task='sst2', num_labels=2)


def _cfg(method: str, norm: str = 'l2', **overrides) -> config_dict.ConfigDict:
  cfg = config_dict.ConfigDict(
    dict(method=method, norm=norm, epsilon=0.5, step_size=0.2, steps=3, weight=1.0, init_std=0.0)
  )
  cfg.update(overrides)
  return cfg


def _batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  real = np.arange(LENGTH)[None] < (4 + np.arange(BATCH) % 8)[:, None]
  return {
    'inputs': np.where(real, rng.integers(3, VOCAB, (BATCH, LENGTH)), 0).astype(np.int32),
    'segment_ids': real.astype(np.int32),
    'positions': np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH)).astype(np.int32),
    'token_types': np.zeros((BATCH, LENGTH), np.int32),
    'label': (np.arange(BATCH) % 2).astype(np.float32),
    'example_id': np.arange(BATCH, dtype=np.int32),
  }


@functools.cache
def _setup():
  model = heads.SequenceClassifier(CFG, 2)
  batch = _batch()
  inputs = [jnp.asarray(batch[n]) for n in ('inputs', 'segment_ids')]
  params = nn.unbox(model.init(jax.random.key(0), *inputs))['params']
  site = input_perturbation.Site(('encoder', 'embed'))

  @jax.jit
  def loss_at(delta):
    perturbed = input_perturbation.Perturbed(model, site.tree(delta))
    return OBJECTIVE.loss_fn(params, batch, None, model=perturbed)[0]

  return model, params, batch, loss_at


@pytest.mark.parametrize('norm', adversarial.NORMS)
@pytest.mark.parametrize('method', ['fgsm', 'pgd', 'freelb'])
def test_perturbations_stay_in_the_ball_and_raise_the_loss(method, norm):
  _, _, _, loss_at = _setup()
  cfg = _cfg(method, norm)
  zeros = jnp.zeros((BATCH, LENGTH, CFG.d_model))
  deltas = adversarial.ascent(loss_at, zeros, cfg)
  assert len(deltas) == {'fgsm': 1, 'pgd': 1, 'freelb': 3}[method]
  clean = float(loss_at(zeros))
  for delta in deltas:
    sizes = np.asarray(adversarial.row_norms(delta, norm))
    assert np.all(sizes <= cfg.epsilon * (1 + 1e-5)), sizes
    assert float(loss_at(delta)) > clean
  if method == 'fgsm':  # One full step to the sphere (linf: to a corner of the cube).
    np.testing.assert_allclose(adversarial.row_norms(deltas[0], norm), cfg.epsilon, rtol=1e-5)
  if method == 'pgd':  # Three steps go further up than one of the same length.
    one = adversarial.ascent(loss_at, zeros, _cfg('pgd', norm, steps=1))
    assert float(loss_at(deltas[0])) > float(loss_at(one[0]))


def test_the_loss_adds_the_perturbed_loss_with_the_perturbation_held():
  model, params, batch, loss_at = _setup()
  cfg = _cfg('fgsm', weight=0.5)
  wrapped = adversarial.wrap(OBJECTIVE.loss_fn, cfg)
  (loss, metrics), grads = jax.jit(
    jax.value_and_grad(lambda p: wrapped(p, batch, None, model=model), has_aux=True)
  )(params)
  # By hand: delta = epsilon x the loss gradient at x, normalized per row.
  site = input_perturbation.Site(('encoder', 'embed'))
  zeros = jnp.zeros((BATCH, LENGTH, CFG.d_model))
  g = jax.grad(loss_at)(zeros)
  delta = cfg.epsilon * g / jnp.sqrt(jnp.sum(g * g, axis=(1, 2), keepdims=True))

  def by_hand(p):
    clean = OBJECTIVE.loss_fn(p, batch, None, model=model)[0]
    moved = input_perturbation.Perturbed(model, site.tree(delta))
    return clean + 0.5 * OBJECTIVE.loss_fn(p, batch, None, model=moved)[0]

  want, want_grads = jax.value_and_grad(by_hand)(params)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
  summary = metrics_lib.summarize(metrics)
  np.testing.assert_allclose(summary['loss'] + 0.5 * summary['adversarial/loss'], loss, rtol=1e-5)
  assert summary['adversarial/loss'] > summary['loss']
  np.testing.assert_allclose(summary['adversarial/delta_norm'], cfg.epsilon, rtol=1e-5)
  assert adversarial.loss_terms({'loss': 1.0}, cfg) == {'loss': 1.0, 'adversarial/loss': 0.5}
  assert adversarial.wrap(OBJECTIVE.loss_fn, _cfg('')) == OBJECTIVE.loss_fn  # Off: itself.


def test_smart_divergence_is_the_symmetric_kl_with_each_side_held_in_turn():
  a = jnp.asarray([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
  b = jnp.asarray([[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
  p, q = np.asarray(jax.nn.softmax(a)), np.asarray(jax.nn.softmax(b))
  want = np.sum(p * np.log(p / q) + q * np.log(q / p), axis=-1)
  np.testing.assert_allclose(adversarial.divergence(a, b), want, rtol=1e-5)
  assert float(adversarial.divergence(a, b)[1]) == 0.0  # Equal outputs: none.
  # d/da of D(a, b) is the gradient of KL(b || a) alone (KL(a || b) reaches only b).
  g = jax.grad(lambda x: jnp.sum(adversarial.divergence(x, b)))(a)
  want_g = jax.grad(lambda x: jnp.sum(adversarial.kl(b, x)))(a)
  np.testing.assert_allclose(g, want_g, rtol=1e-6)
  one = adversarial.divergence(jnp.asarray([[1.5], [0.0]]), jnp.asarray([[0.5], [0.0]]))
  np.testing.assert_allclose(one, [1.0, 0.0])  # A regression: the squared difference.


def test_smart_loss_by_hand_from_a_random_start():
  model, params, batch, _ = _setup()
  cfg = _cfg('smart', epsilon=0.5, step_size=0.2, steps=1, init_std=0.02, weight=2.0)
  rng = jax.random.key(7)
  wrapped = adversarial.wrap(OBJECTIVE.loss_fn, cfg)
  (loss, metrics), grads = jax.jit(
    jax.value_and_grad(lambda p: wrapped(p, batch, rng, model=model), has_aux=True)
  )(params)
  site = input_perturbation.Site(('encoder', 'embed'))
  shape = (BATCH, LENGTH, CFG.d_model)
  start = 0.02 * jax.random.normal(jax.random.fold_in(rng, 0x5EED), shape)  # Inside the ball.
  assert float(jnp.max(jnp.sqrt(jnp.sum(start**2, axis=(1, 2))))) < 0.5

  def per_row(x):  # [batch, 1, 1]
    return jnp.sqrt(jnp.sum(x * x, axis=(1, 2), keepdims=True))

  def logits(p, delta):
    inputs = [batch[n] for n in ('inputs', 'segment_ids', 'positions', 'token_types')]
    return model.apply({'params': p, 'perturbations': site.tree(delta)}, *inputs)

  clean_held = logits(params, jnp.zeros(shape))
  p_clean = jax.nn.softmax(clean_held)

  def ascent_objective(delta):  # Symmetric KL against the clean outputs, as a value.
    p_moved = jax.nn.softmax(logits(params, delta))
    return jnp.sum(p_moved * jnp.log(p_moved / p_clean) + p_clean * jnp.log(p_clean / p_moved))

  g = jax.grad(ascent_objective)(start)
  delta = start + 0.2 * g / per_row(g)
  delta = delta * jnp.minimum(1.0, 0.5 / per_row(delta))

  def by_hand(p):
    clean = OBJECTIVE.loss_fn(p, batch, None, model=model)[0]
    moved, out = logits(p, delta), logits(p, jnp.zeros(shape))
    hold = jax.lax.stop_gradient
    kl = adversarial.kl
    return clean + 2.0 * jnp.mean(kl(hold(out), moved) + kl(hold(moved), out))

  want, want_grads = jax.value_and_grad(by_hand)(params)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
  summary = metrics_lib.summarize(metrics)
  assert summary['adversarial/smoothness'] > 0
  np.testing.assert_allclose(
    summary['loss'] + 2.0 * summary['adversarial/smoothness'], loss, rtol=1e-5
  )
  assert summary['adversarial/delta_norm'] <= 0.5 * (1 + 1e-6)
  assert adversarial.loss_terms({'loss': 1.0}, cfg) == {'loss': 1.0, 'adversarial/smoothness': 2.0}


def test_smart_needs_a_random_start_and_sentence_outputs():
  model, params, batch, _ = _setup()
  with pytest.raises(ValueError, match='init_std > 0'):
    adversarial.wrap(OBJECTIVE.loss_fn, _cfg('smart'))
  cfg = _cfg('smart', init_std=0.01)
  with pytest.raises(ValueError, match='random start from the step rng'):
    adversarial.wrap(OBJECTIVE.loss_fn, cfg)(params, batch, None, model=model)
  tagger = heads.TokenClassifier(CFG, 3)
  tag_params = nn.unbox(tagger.init(jax.random.key(0), batch['inputs'], batch['segment_ids']))

  def tag_loss(p, b, rng, *, model):
    out = model.apply({'params': p}, b['inputs'], b['segment_ids'])  # [batch, length, 3]
    return jnp.mean(out), {'loss': (jnp.sum(out), jnp.float32(out.size))}

  with pytest.raises(ValueError, match=r'\[batch, classes\] outputs.*\(8, 12, 3\)'):
    adversarial.wrap(tag_loss, cfg)(tag_params['params'], batch, jax.random.key(0), model=tagger)
  # Any method may start at random: inside the ball, and FGSM then lands elsewhere.
  _, _, _, loss_at = _setup()
  zeros = jnp.zeros((BATCH, LENGTH, CFG.d_model))
  start = adversarial.random_start(zeros, _cfg('fgsm', init_std=1.0), jax.random.key(1))
  assert np.all(np.asarray(adversarial.row_norms(start, 'l2')) <= 0.5 * (1 + 1e-6))
  moved = adversarial.ascent(loss_at, start, _cfg('fgsm'))[0]
  assert not np.allclose(moved, adversarial.ascent(loss_at, zeros, _cfg('fgsm'))[0])
  assert float(loss_at(moved)) > float(loss_at(zeros))


@functools.cache
def _trained(num_microbatches: int):
  model = heads.SequenceClassifier(CFG, 2)
  tx = optax.sgd(0.5)  # Updates linear in the gradient: its differences are not magnified.
  mesh_cfg = types.SimpleNamespace(data=2, fsdp=1, tensor=1)
  mesh = partitioning.make_mesh(mesh_cfg, devices=jax.devices()[:2])
  rules = partitioning.logical_rules('fsdp_tp')
  state, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=0, seq_len=LENGTH)
  sharding = partitioning.batch_sharding(mesh)
  cfg = _cfg('freelb')
  step = state_lib.jit_train_step(
    shardings, sharding, mesh=mesh, rules=rules, model=model,
    loss_fn=adversarial.wrap(OBJECTIVE.loss_fn, cfg), tx=tx, seed=0,
    num_microbatches=num_microbatches, loss_terms=adversarial.loss_terms({'loss': 1.0}, cfg),
  )  # fmt: skip
  state, metrics = step(state, partitioning.global_batch(_batch(), sharding))
  return metrics_lib.summarize(metrics), jax.device_get(state.params)


def test_microbatches_train_as_the_whole_batch():
  want, want_params = _trained(1)
  got, params = _trained(2)
  for name in ('loss', 'adversarial/loss', 'adversarial/delta_norm'):
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want_params), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_fine_tuning_run_logs_the_perturbed_loss(spm_path, tmp_path):
  write_sst2(tmp_path / 'glue', 64, 16)
  config = tiny(glue_config.get_config('sst2'), spm_path, tmp_path / 'glue')
  config.total_steps, config.eval_every_steps, config.log_every_steps = 8, 8, 1
  config.adversarial.method, config.adversarial.steps = 'pgd', 2
  assert harness.step_options(config, OBJECTIVE)['loss_terms'] == {
    'loss': 1.0, 'adversarial/loss': 1.0}  # fmt: skip
  workdir = str(tmp_path / 'run')
  during_training.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if 'adversarial/loss' in r]
  assert len(train) == 8
  assert all(r['adversarial/loss'] > r['loss'] for r in train), train
  assert all(0 < r['adversarial/delta_norm'] <= 1.0 + 1e-5 for r in train)
  assert any('eval/sst2' in r or 'eval/accuracy' in r for r in records), records[-1]
