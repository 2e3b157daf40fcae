"""The same steps on different meshes give the same losses; params are sharded by the rules."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import quickstart
from data.loader import ShardSpec
from training import experiment, optimizers, partitioning
from training import state as state_lib


def _config(spm_path, data, fsdp, tensor, strategy='fsdp_tp'):
  c = quickstart.get_config()
  c.batch_size, c.seq_len = 8, 64
  c.data.tokenizer_path = spm_path
  c.optimizer.warmup_steps = 1
  c.optimizer.warmup_ratio = 0.0
  c.total_steps = 3
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor, c.mesh.strategy = data, fsdp, tensor, strategy
  return c


def train_steps(config, devices=None, steps=3):
  """Losses and state after `steps` real train steps (state.create, jit_train_step) on the
  config's mesh over `devices` (all by default); tests/training/test_sequence_parallel.py
  uses it too."""
  exp = experiment.build(config, '/nonexistent-unused')
  mesh = partitioning.make_mesh(config.mesh, devices=devices)
  rules = partitioning.logical_rules(config.mesh.strategy)
  partitioning.check_length(config.seq_len, mesh)
  tx = optimizers.build(config.optimizer, config.total_steps)
  state, shardings = state_lib.create(
    exp.model, tx, mesh=mesh, rules=rules, seed=config.seed, seq_len=config.seq_len
  )
  batch_sharding = partitioning.batch_sharding(mesh)
  step_fn = state_lib.jit_train_step(
    shardings, batch_sharding, mesh=mesh, rules=rules, model=exp.model,
    loss_fn=exp.objective.loss_fn, tx=tx, seed=config.seed,
  )  # fmt: skip
  loader = exp.loader('train', ShardSpec.create(config.batch_size, 1, 0, 1))
  losses = []
  for _ in range(steps):
    state, metrics = step_fn(state, partitioning.global_batch(next(loader), batch_sharding))
    losses.append(float(metrics['loss'][0] / metrics['loss'][1]))
  return losses, state


MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]


@pytest.fixture(scope='module')
def reference(spm_path):
  return train_steps(_config(spm_path, 1, 1, 1), jax.devices()[:1])


@pytest.mark.slow
@pytest.mark.parametrize('shape', MESHES, ids=lambda s: 'x'.join(map(str, s)))
def test_same_losses_on_every_mesh(spm_path, reference, shape):
  losses, state = train_steps(_config(spm_path, *shape), jax.devices())
  np.testing.assert_allclose(losses, reference[0], rtol=0, atol=1e-5)
  assert losses[2] < losses[0]  # It trains.
  ref_params = jax.tree.leaves(reference[1].params)
  for got, want in zip(jax.tree.leaves(state.params), ref_params, strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_params_are_sharded_as_the_rules_say(spm_path):
  _, state = train_steps(_config(spm_path, 2, 2, 2), jax.devices(), steps=1)
  params = state.params['encoder']
  specs = {
    'embed/token/embedding': P('tensor', 'fsdp'),  # [vocab, embed]
    'embed/position/embedding': P(None, 'fsdp'),  # [position, embed]
    'block_0/attention/query/kernel': P('fsdp', 'tensor', None),  # [embed, heads, kv]
    'block_0/attention/out/kernel': P('tensor', None, 'fsdp'),  # [heads, kv, embed]
    'block_0/mlp/wi/kernel': P('fsdp', 'tensor'),  # [embed, mlp]
    'block_0/mlp/wo/kernel': P('tensor', 'fsdp'),  # [mlp, embed]
    'block_0/mlp/wi/bias': P('tensor'),
    'block_0/attention_norm/scale': P('fsdp'),
  }
  for path, spec in specs.items():
    leaf = params
    for key in path.split('/'):
      leaf = leaf[key]
    assert leaf.sharding.spec == spec, path
    # Really split: each device holds 1/(shards) of the leaf.
    shards = np.prod([leaf.sharding.mesh.shape[a] for a in jax.tree.leaves(tuple(spec)) if a])
    assert leaf.addressable_shards[0].data.size == leaf.size // shards, path
  # Adam's moments follow their params.
  mu = state.opt_state[1][0].mu['encoder']['block_0']['mlp']['wi']['kernel']
  assert mu.sharding.spec == P('fsdp', 'tensor')


@pytest.mark.parametrize(
  'strategy, expected',
  [('dp', P(None, None)), ('fsdp', P('fsdp', None)), ('fsdp_tp', P('fsdp', 'tensor'))],
)
def test_strategies_pick_rule_sets(spm_path, strategy, expected):
  _, state = train_steps(_config(spm_path, 2, 2, 2, strategy), jax.devices(), steps=1)
  assert state.params['encoder']['block_0']['mlp']['wi']['kernel'].sharding.spec == expected
