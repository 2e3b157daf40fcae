"""optimizer.name: AdamW, LAMB, Adafactor, Adam and SGD with the schedules, clipping, the
weight-decay mask, freezing and layer-wise decay; their state sharded by the params' rules."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import base
from models import heads, presets
from training import optimizers, partitioning
from training import state as state_lib

DEPTH = 2


def _model(d_model=32):
  cfg = presets.get_config(
    'bert-base', vocab_size=64, num_layers=DEPTH, d_model=d_model, num_heads=2, mlp_dim=64
  )
  return heads.SequenceClassifier(cfg, num_labels=2)


def _params(model):
  tokens = jnp.ones((1, 8), jnp.int32)
  return nn.unbox(model.init(jax.random.key(0), tokens, tokens, tokens)['params'])


def _opt(**keys):
  c = base.get_config().optimizer
  c.update({'warmup_steps': 0, 'learning_rate': 1e-2, 'schedule': 'constant', **keys})
  return c


def _leaf(tree, path):
  for key in path.split('/'):
    tree = tree[key]
  return tree


def _loss(model):
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (8, 8)), jnp.int32)
  labels = jnp.arange(8) % 2

  def loss(params):
    logits = model.apply({'params': params}, tokens, jnp.ones_like(tokens), tokens * 0)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  return loss


@pytest.mark.parametrize('name', optimizers.OPTIMIZERS)
def test_every_optimizer_trains_with_clipping_freezing_and_layer_decay(name):
  model = _model()
  params = _params(model)
  keys = dict(name=name, freeze='embed/', layer_decay=0.5, clip_norm=1.0, schedule='linear')
  keys.update(warmup_steps=2)
  # LAMB's and Adafactor's steps scale with ||w|| (0.02-scale weights here): larger rates.
  keys.update(learning_rate={'lamb': 0.1, 'adafactor': 1.0, 'sgd': 0.5}.get(name, 1e-2))
  keys.update(momentum=0.9 if name == 'sgd' else 0.0)
  tx = optimizers.build(_opt(**keys), total_steps=10)
  loss = _loss(model)

  @jax.jit
  def step(params, opt_state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  opt_state, start = tx.init(params), params
  values = []
  for _ in range(8):
    params, opt_state, value = step(params, opt_state)
    values.append(float(value))
  assert values[-1] < values[0] - 0.01, values
  embedding = 'encoder/embed/token/embedding'  # Frozen: not one value changed.
  np.testing.assert_array_equal(_leaf(params, embedding), _leaf(start, embedding))
  top = 'encoder/block_1/mlp/wi/kernel'
  assert not np.array_equal(_leaf(params, top), _leaf(start, top))


def _one_update(opt_cfg, params, grads):
  tx = optimizers.build(opt_cfg, total_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_lamb_scales_matrices_by_the_trust_ratio_and_leaves_vectors_alone():
  params = {'dense': {'kernel': jnp.full((4, 3), 2.0), 'bias': jnp.full((3,), 2.0)}}
  grads = {'dense': {'kernel': jnp.full((4, 3), 0.5), 'bias': jnp.full((3,), 0.5)}}
  cfg = _opt(name='lamb', clip_norm=0.0, weight_decay=0.1, eps=0.0)
  updates = _one_update(cfg, params, grads)
  # Adam's first step direction is sign(g) = 1; the kernel adds 0.1 x 2.0 of decay.
  direction = 1.0 + 0.1 * 2.0
  ratio = float(jnp.linalg.norm(params['dense']['kernel'])) / (direction * np.sqrt(12))
  np.testing.assert_allclose(updates['dense']['kernel'], -1e-2 * ratio * direction, rtol=1e-5)
  np.testing.assert_allclose(updates['dense']['bias'], -1e-2 * 1.0, rtol=1e-5)  # No ratio.


def test_adam_and_sgd_add_l2_to_the_gradient_adamw_decays_apart():
  params = {'w': jnp.full((2, 2), 3.0), 'b': jnp.full((2,), 3.0)}
  grads = {'w': jnp.full((2, 2), 1.0), 'b': jnp.full((2,), 1.0)}
  sgd = _one_update(_opt(name='sgd', clip_norm=0.0, weight_decay=0.1), params, grads)
  np.testing.assert_allclose(sgd['w'], -1e-2 * (1.0 + 0.1 * 3.0))  # L2 on matrices...
  np.testing.assert_allclose(sgd['b'], -1e-2 * 1.0)  # ... not on biases.
  adam = _one_update(_opt(name='adam', clip_norm=0.0, weight_decay=0.1, eps=0.0), params, grads)
  np.testing.assert_allclose(adam['w'], -1e-2, rtol=1e-5)  # Adam normalizes g + wd w away.
  adamw = _one_update(_opt(name='adamw', clip_norm=0.0, weight_decay=0.1, eps=0.0), params, grads)
  np.testing.assert_allclose(adamw['w'], -1e-2 * (1.0 + 0.1 * 3.0), rtol=1e-5)


def test_adafactor_factors_matrices_and_has_no_first_moment():
  params = {'kernel': jnp.ones((256, 128)), 'bias': jnp.ones((128,))}
  tx = optimizers.build(_opt(name='adafactor'), total_steps=10)
  leaves = {
    adaptation_path(p): x.shape
    for p, x in jax.tree_util.tree_flatten_with_path(tx.init(params))[0]
    if hasattr(x, 'shape') and x.ndim
  }
  # optax drops the largest side from the row statistics, the second from the columns.
  assert leaves['1/0/v_row/kernel'] == (128,) and leaves['1/0/v_col/kernel'] == (256,)
  assert leaves['1/0/v/bias'] == (128,)  # A vector keeps a full second moment.
  assert not any('mu' in path or 'momentum' in path for path in leaves)


def adaptation_path(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def test_adafactor_state_is_sharded_by_the_params_rules():
  """Factored statistics keep the names of the axes they keep: a [embed, mlp] kernel's
  row statistics [embed] shard as its rows, the column ones [mlp] as its columns."""
  model = _model(d_model=32)
  tx = optimizers.build(_opt(name='adafactor', adafactor_min_dim_to_factor=8), total_steps=10)
  mesh = partitioning.make_mesh(types.SimpleNamespace(data=2, fsdp=2, tensor=2))
  rules = partitioning.logical_rules('fsdp_tp')
  _, shardings = state_lib.abstract_state(model, tx, mesh=mesh, rules=rules, seq_len=8)
  specs = {
    adaptation_path(p): s.spec
    for p, s in jax.tree_util.tree_flatten_with_path(shardings.opt_state)[0]
  }
  block = 'encoder/block_0'
  wi, wo = f'{block}/mlp/wi/kernel', f'{block}/mlp/wo/kernel'  # [embed, mlp], [mlp, embed]
  assert specs[f'1/0/v_row/{wi}'] == P('fsdp')  # mlp (the larger side) dropped: [embed].
  assert specs[f'1/0/v_col/{wi}'] == P('tensor')  # embed dropped: [mlp].
  assert specs[f'1/0/v_row/{wo}'] == P('fsdp')
  assert specs[f'1/0/v/{block}/mlp/wi/bias'] == P('tensor')  # Unfactored: the param's spec.
  assert specs[f'1/0/v_row/{block}/mlp/wi/bias'] == P(None)  # (1,) placeholder: replicated.
  query = f'{block}/attention/query/kernel'  # [embed 32, heads 2, kv 16]: factored over
  assert specs[f'1/0/v_row/{query}'] == P('tensor', None)  # embed and kv: [heads, kv]
  assert specs[f'1/0/v_col/{query}'] == P('fsdp', 'tensor')  # and [embed, heads].
  # And a state built with these shardings trains on the mesh.
  state, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=0, seq_len=8)
  assert state.opt_state[1][0].v_row['encoder']['block_0']['mlp']['wi'][
    'kernel'
  ].sharding.spec == P('fsdp')


def test_rsqrt_schedule_is_t5s():
  schedule = optimizers.learning_rate_schedule(
    _opt(schedule='rsqrt', learning_rate=0.01, warmup_steps=100), total_steps=10_000
  )
  assert float(schedule(50)) == pytest.approx(0.005)  # Linear warmup.
  assert float(schedule(100)) == pytest.approx(0.01)
  assert float(schedule(400)) == pytest.approx(0.01 * np.sqrt(100 / 400))


def test_bad_names_and_combinations_are_refused():
  with pytest.raises(ValueError, match='Unknown optimizer.name'):
    optimizers.build(_opt(name='adagrad'), 10)
  with pytest.raises(ValueError, match='RecAdam'):
    optimizers.build(_opt(name='lamb', recadam_gamma=1.0), 10)
