"""Fine-tuning adaptation: frozen parameters never change and hold no optimizer state;
layer-wise learning-rate decay scales each block's step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from configs import base
from models import heads, presets
from training import adaptation, optimizers, partitioning
from training import state as state_lib

DEPTH = 3


def _model():
  cfg = presets.get_config(
    'bert-base', vocab_size=64, num_layers=DEPTH, d_model=32, num_heads=2, mlp_dim=64
  )
  return heads.SequenceClassifier(cfg, num_labels=2)


def _params(model):
  tokens = jnp.ones((1, 8), jnp.int32)
  return nn.unbox(model.init(jax.random.key(0), tokens, tokens, tokens)['params'])


def _opt(**keys):
  c = base.get_config().optimizer
  with c.unlocked():
    c.update(keys)
  return c


def _names(tree, label):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {adaptation.path_name(p) for p, lab in flat if lab == label}


def test_labels_freeze_by_pattern_and_by_depth():
  params = _params(_model())
  every = _names(jax.tree.map(lambda _: 'x', params), 'x')
  frozen = _names(adaptation.labels(_opt(freeze='^encoder/'), params), adaptation.FROZEN)
  assert frozen == {n for n in every if n.startswith('encoder/')}
  top = _names(adaptation.labels(_opt(train_top_layers=1), params), adaptation.FROZEN)
  assert top == {n for n in every if n.startswith(('encoder/embed/', 'encoder/block_0/'))} | {
    n for n in every if n.startswith('encoder/block_1/')
  }
  assert not any(n.startswith(('encoder/block_2/', 'pooler/', 'classifier/')) for n in top)
  with pytest.raises(ValueError, match='matches no parameter'):
    adaptation.labels(_opt(freeze='^nothing/'), params)
  with pytest.raises(ValueError, match='train_top_layers=4 must be in 1..3'):
    adaptation.labels(_opt(train_top_layers=4), params)


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
  params = _params(_model())
  size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
  trainable = sum(
    x.size
    for (p, x) in jax.tree_util.tree_flatten_with_path(params)[0]
    if adaptation.path_name(p).startswith(('encoder/block_2/', 'pooler/', 'classifier/'))
  )
  full = optimizers.build(_opt(), 100)
  tx = optimizers.build(_opt(train_top_layers=1, warmup_steps=0), 100)
  state = tx.init(params)
  # Adam's two moments for the trained parameters only (plus step counters).
  assert 2 * trainable <= size(state) < 2 * trainable + 16
  assert size(full.init(params)) >= 2 * size(params)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  updates, _ = jax.jit(tx.update)(grads, state, params)
  for path, update in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = adaptation.path_name(path)
    moved = bool(jnp.any(update != 0))
    assert moved == name.startswith(('encoder/block_2/', 'pooler/', 'classifier/')), name


def test_layer_decay_scales_each_blocks_first_step():
  params = _params(_model())
  opt = _opt(layer_decay=0.5, weight_decay=0.0, warmup_steps=0, schedule='constant', clip_norm=0.0)
  opt.learning_rate = 1e-2
  tx = optimizers.build(opt, 100)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  flat = {adaptation.path_name(p): u for p, u in jax.tree_util.tree_flatten_with_path(updates)[0]}
  # Adam's first step is lr x scale per element; heads sit at layer DEPTH + 1 = 4.
  expected = {
    'classifier/kernel': 1.0,
    'encoder/block_2/mlp/wo/kernel': 0.5,
    'encoder/block_0/mlp/wo/kernel': 0.125,
    'encoder/embed/token/embedding': 0.0625,
  }
  for name, scale in expected.items():
    got = [v for k, v in flat.items() if k.startswith(name)]
    assert got, (name, sorted(flat)[:8])
    np.testing.assert_allclose(np.abs(np.asarray(got[0])), 1e-2 * scale, rtol=1e-4)


def test_a_sharded_train_step_leaves_frozen_parameters_bit_identical():
  model = _model()
  tx = optimizers.build(_opt(freeze='^encoder/embed/,block_0', warmup_steps=0), 10)
  mesh = partitioning.make_mesh(config_dict.ConfigDict(dict(data=-1, fsdp=2, tensor=1)))
  rules = partitioning.logical_rules('fsdp_tp')
  state, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=0, seq_len=8)
  before = jax.tree.map(np.asarray, state.params)

  def loss_fn(params, batch, rng, *, model):
    logits = model.apply({'params': params}, batch['inputs'], batch['segment_ids'])
    loss = jnp.mean(logits**2)
    return loss, {'loss': (loss, jnp.float32(1.0))}

  step = state_lib.jit_train_step(
    shardings, partitioning.batch_sharding(mesh), mesh=mesh, rules=rules, model=model,
    loss_fn=loss_fn, tx=tx, seed=0,
  )  # fmt: skip
  batch = {'inputs': np.ones((8, 8), np.int32) * 7, 'segment_ids': np.ones((8, 8), np.int32)}
  state, _ = step(state, partitioning.global_batch(batch, partitioning.batch_sharding(mesh)))
  for (path, old), new in zip(
    jax.tree_util.tree_flatten_with_path(before)[0], jax.tree.leaves(state.params), strict=True
  ):
    name = adaptation.path_name(path)
    same = np.array_equal(old, np.asarray(new))
    assert same == (name.startswith('encoder/embed/') or 'block_0' in name), name


def test_gradual_unfreezing_opens_one_layer_every_n_steps_from_the_top():
  params = _params(_model())
  tx = optimizers.build(_opt(unfreeze_every=2, warmup_steps=0, schedule='constant'), 100)
  state = tx.init(params)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  update = jax.jit(tx.update)
  opened = []
  for _ in range(10):
    updates, state = update(grads, state, params)
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    moving = {adaptation.path_name(p) for p, u in flat if bool(jnp.any(u != 0))}
    assert any(m.startswith('classifier/') for m in moving)  # The head trains throughout.
    encoder = {m.split('/')[1] for m in moving if m.startswith('encoder/')}
    opened.append(sorted(encoder))
  # Heads from step 0; block 2 from step 2, block 1 from 4, block 0 from 6, embeddings from 8.
  assert opened[0] == opened[1] == []
  assert opened[2] == opened[3] == ['block_2']
  assert opened[4] == ['block_1', 'block_2'] and opened[6] == ['block_0', 'block_1', 'block_2']
  assert opened[8] == ['block_0', 'block_1', 'block_2', 'embed']


def test_houlsby_adapters_start_as_identity_and_train_alone():
  cfg = presets.get_config(
    'bert-base', vocab_size=64, num_layers=2, d_model=32, num_heads=2, mlp_dim=64, adapter_dim=8
  )
  plain = heads.SequenceClassifier(cfg.replace(adapter_dim=0), num_labels=2)
  adapted = heads.SequenceClassifier(cfg, num_labels=2)
  tokens = jnp.asarray(np.random.default_rng(0).integers(5, 64, (2, 8)), jnp.int32)
  segments = jnp.ones_like(tokens)
  params = nn.unbox(adapted.init(jax.random.key(0), tokens, segments)['params'])
  names = {adaptation.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert {
    'encoder/block_1/attention_adapter/down/kernel',
    'encoder/block_1/mlp_adapter/up/kernel',
  } <= names
  # Fresh adapters (up projection at zero) change nothing: the plain model's outputs.
  without = jax.tree_util.tree_map(lambda x: x, params)
  for i in range(2):
    for sub in ('attention_adapter', 'mlp_adapter'):
      del without['encoder'][f'block_{i}'][sub]
  np.testing.assert_allclose(
    adapted.apply({'params': params}, tokens, segments),
    plain.apply({'params': without}, tokens, segments),
    atol=1e-6,
  )
  # Houlsby fine-tuning: everything in the encoder but adapters and norms is frozen.
  frozen = _names(
    adaptation.labels(_opt(freeze='^encoder/(?!.*(adapter|norm))'), params), adaptation.FROZEN
  )
  assert frozen and all('adapter' not in n and 'norm' not in n for n in frozen)
  assert all(
    n in frozen for n in names if n.startswith('encoder/') and 'kernel' in n and 'adapter' not in n
  )
