"""Magnitude pruning: Zhu & Gupta's schedule by hand, exact global / per-layer masks on
hand-made trees, pruned weights exactly zero under AdamW with weight decay, the other
parameters untouched, masks kept by a skipped step and through a checkpoint, and (slow)
a train.py run killed and resumed mid-run."""

import functools
import glob
import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ml_collections import config_dict

from bench import soak
from models import heads, presets
from objectives.shared import token_lm
from tests.training import runs
from training import checkpointing, partitioning, pruning
from training import state as state_lib


def _prune_cfg(**overrides):
  c = config_dict.ConfigDict(
    dict(sparsity=0.4, schedule='gradual', scope='global', begin_step=0, end_step=0, frequency=10)
  )
  c.update(overrides)
  return c


def test_gradual_schedule_by_hand():
  # begin 10, end 40, every 10: s = 0.4 (1 - (1 - (t - 10) / 30)^3) at t = 10, 20, 30, 40.
  cfg = _prune_cfg(begin_step=10, end_step=40)
  ramp = {0: 0.0, 9: 0.0, 10: 0.0, 19: 0.0, 20: 0.4 * 19 / 27, 29: 0.4 * 19 / 27}
  ramp |= {30: 0.4 * 26 / 27, 39: 0.4 * 26 / 27, 40: 0.4, 59: 0.4}
  for step, want in ramp.items():
    assert float(pruning.sparsity_at(step, cfg, 60)) == pytest.approx(want, abs=1e-6), step
  due = [s for s in range(60) if pruning.update_due(s, cfg, 60)]
  assert due == [10, 20, 30, 40]
  # An end off the grid gets its own update; end_step 0 is two thirds of the run.
  cfg = _prune_cfg(end_step=25)
  assert [s for s in range(60) if pruning.update_due(s, cfg, 60)] == [0, 10, 20, 25]
  assert float(pruning.sparsity_at(24, cfg, 60)) == pytest.approx(0.4 * (1 - 0.2**3), abs=1e-6)
  assert float(pruning.sparsity_at(25, cfg, 60)) == pytest.approx(0.4)
  assert pruning.resolved_end_step(_prune_cfg(), 60) == 40
  oneshot = _prune_cfg(schedule='oneshot', begin_step=5)
  got = [float(pruning.sparsity_at(s, oneshot, 60)) for s in (4, 5, 50)]
  assert got == pytest.approx([0.0, 0.4, 0.4], abs=1e-7)
  assert [s for s in range(60) if pruning.update_due(s, oneshot, 60)] == [5]


def _hand_tree():
  """Two pruned matrices (4 + 6 weights) and leaves that are never pruned."""
  return {
    'encoder': {
      'embed': {'token': {'embedding': jnp.array([[0.01, 0.02], [0.03, 0.04]])}},
      'block_0': {
        'attention': {'query': {'kernel': jnp.array([[-1.0, 2.0], [3.0, -4.0]]),
                                'bias': jnp.array([0.001, 0.002])}},
        'attention_norm': {'scale': jnp.array([0.001, 0.001])},
        'mlp': {'wi': {'kernel': jnp.array([[0.5, -10.0], [20.0, 30.0], [-0.1, 40.0]])}},
      },
    },
    'classifier': {'kernel': jnp.array([[0.001, 0.002]])},
  }  # fmt: skip


def test_global_and_layer_masks_on_a_hand_made_tree():
  params = _hand_tree()
  query, wi = 'encoder/block_0/attention/query/kernel', 'encoder/block_0/mlp/wi/kernel'
  assert pruning.pruned_names(params) == [query, wi]
  # Global, half of 10: the 5 smallest magnitudes are 0.1, 0.5 (wi) and 1, 2, 3 (query).
  masks = pruning.masks_for(params, 0.5, 'global')
  np.testing.assert_array_equal(masks[query], [[False, False], [False, True]])
  np.testing.assert_array_equal(masks[wi], [[False, True], [True, True], [False, True]])
  # Layer: 2 of query's 4 (1, 2), 3 of wi's 6 (0.1, 0.5, 10).
  masks = pruning.masks_for(params, 0.5, 'layer')
  np.testing.assert_array_equal(masks[query], [[False, False], [True, True]])
  np.testing.assert_array_equal(masks[wi], [[False, False], [True, True], [False, True]])


def test_ties_are_broken_by_position_and_a_scanned_stack_ranks_each_layer():
  ties = {'decoder': {'block_3': {'mlp': {'wo': {'kernel': jnp.array([[1.0, -1.0, 1.0, -1.0]])}}}}}
  masks = pruning.masks_for(ties, 0.5, 'layer')
  np.testing.assert_array_equal(masks['decoder/block_3/mlp/wo/kernel'], [[0, 0, 1, 1]])
  stacked = jnp.array([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])  # [layers, ...]
  scanned = {'encoder': {'blocks': {'mlp': {'wo': {'kernel': stacked}}}}}
  per_layer = pruning.masks_for(scanned, 0.5, 'layer')['encoder/blocks/mlp/wo/kernel']
  np.testing.assert_array_equal(per_layer, [[[0, 0], [1, 1]], [[0, 0], [1, 1]]])
  together = pruning.masks_for(scanned, 0.5, 'global')['encoder/blocks/mlp/wo/kernel']
  np.testing.assert_array_equal(together, [[[0, 0], [0, 0]], [[1, 1], [1, 1]]])


def test_masks_equal_a_stable_sort_of_magnitudes_with_many_ties():
  """bfloat16 weights repeat values: the masks are exactly NumPy's stable ranking (by
  magnitude, then leaf, then row-major position)."""
  rng = np.random.default_rng(0)
  shapes = {
    'encoder/block_0/attention/out/kernel': (4, 8, 16),
    'encoder/block_1/mlp/wo/kernel': (32, 16),
  }
  values = {n: rng.normal(size=s).astype(jnp.bfloat16) for n, s in shapes.items()}
  tree = {'encoder': {'block_0': {'attention': {'out': {'kernel': values[list(shapes)[0]]}}},
                      'block_1': {'mlp': {'wo': {'kernel': values[list(shapes)[1]]}}}}}  # fmt: skip
  flat = np.concatenate([np.abs(v.astype(np.float32)).reshape(-1) for v in values.values()])
  assert len(np.unique(flat)) < 0.5 * flat.size  # Many ties.
  k = round(0.37 * flat.size)
  want = np.ones(flat.size, bool)
  want[np.argsort(flat, kind='stable')[:k]] = False
  masks = jax.jit(lambda t: pruning.masks_for(t, 0.37, 'global'))(tree)
  got = np.concatenate([np.asarray(masks[n]).reshape(-1) for n in shapes])
  np.testing.assert_array_equal(got, want)
  stacked = rng.normal(size=(3, 8, 16)).astype(jnp.bfloat16)  # A scanned stack, layer scope.
  scanned = {'decoder': {'blocks': {'mlp': {'wi': {'kernel': stacked}}}}}
  got = np.asarray(pruning.masks_for(scanned, 0.37, 'layer')['decoder/blocks/mlp/wi/kernel'])
  for layer in range(3):
    row = np.abs(stacked[layer].astype(np.float32)).reshape(-1)
    want = np.ones(row.size, bool)
    want[np.argsort(row, kind='stable')[: round(0.37 * row.size)]] = False
    np.testing.assert_array_equal(got[layer].reshape(-1), want, err_msg=f'layer {layer}')


def _bert_params():
  cfg = presets.get_config('bert-tiny', vocab_size=64, d_model=32, num_heads=2, mlp_dim=64)
  tokens = jnp.ones((1, 8), jnp.int32)
  return nn.unbox(heads.MaskedLM(cfg).init(jax.random.key(0), tokens, tokens, tokens)['params'])


@pytest.mark.default_emitters
def test_masks_hold_under_adamw_with_weight_decay_and_other_leaves_are_untouched():
  params = _bert_params()
  names = pruning.pruned_names(params)
  assert names and all(n.endswith('/kernel') and '/block_' in n for n in names)
  excluded = [n for n in _by_name(params) if n not in names]
  assert any('embed' in n for n in excluded) and any(n.endswith('bias') for n in excluded)
  inner = optax.adamw(1e-2, weight_decay=0.1)  # Decay on every leaf, pruned ones too.
  cfg = _prune_cfg(sparsity=0.5, begin_step=0, end_step=4, frequency=2, scope='layer')
  tx = pruning.wrap(inner, cfg, total_steps=8)
  pruned, plain = params, params
  state, plain_state = tx.init(params), inner.init(params)
  update, plain_update = jax.jit(tx.update), jax.jit(inner.update)
  kept_before = None
  for step in range(7):
    key = jax.random.key(step)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    grads = treedef.unflatten(
      [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    )
    updates, state = update(grads, state, pruned)
    pruned = optax.apply_updates(pruned, updates)
    plain_updates, plain_state = plain_update(grads, plain_state, plain)
    plain = optax.apply_updates(plain, plain_updates)
    masks = _by_name(state.masks)
    values = _by_name(pruned)
    for name in names:
      assert not np.any(values[name][~masks[name]]), (step, name)  # Exactly 0.0.
    kept = {n: masks[n] for n in names}
    if kept_before is not None:  # Once pruned, pruned for good.
      assert all(np.all(kept[n] <= kept_before[n]) for n in names)
    kept_before = kept
    want = float(pruning.sparsity_at(step, cfg, 8))
    for name in names:  # Layer scope: each matrix at round(s x n) zeros exactly.
      assert np.sum(values[name] == 0) == round(want * values[name].size), (step, name)
  assert int(state.count) == 7
  plain_values = _by_name(plain)
  for name in excluded:  # The inner optimizer's own updates, bit for bit.
    np.testing.assert_array_equal(values[name], plain_values[name], err_msg=name)
  for name in names:  # Kept weights: AdamW is elementwise, so they follow the plain run.
    kept = masks[name]
    np.testing.assert_array_equal(values[name][kept], plain_values[name][kept], err_msg=name)
  assert pruning.achieved_sparsity(pruned) == pytest.approx(0.5, abs=1e-3)
  assert max(pruning.sparsity_by_matrix(plain).values()) == 0.0  # Unpruned: no zeros.


def _by_name(tree) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {pruning.param_name(p): np.asarray(x) for p, x in flat}


def test_bad_prune_values_are_named():
  for overrides, message in [
    ({'sparsity': 1.0}, r'prune.sparsity=1.0 must be in \[0, 1\)'),
    ({'schedule': 'cubic'}, r"prune.schedule='cubic' must be one of \('gradual', 'oneshot'\)"),
    ({'scope': 'model'}, r"prune.scope='model' must be one of"),
    ({'frequency': 0}, r'prune.frequency=0 must be an integer >= 1'),
    ({'begin_step': 50, 'end_step': 40}, r'prune.end_step=40 must be > prune.begin_step=50'),
    ({'end_step': 100}, r'prune.end_step=100 must be < total_steps=100'),
    ({'begin_step': 70}, r'prune.begin_step=70 must be < the ramp end 66'),
    ({'schedule': 'oneshot', 'end_step': 10}, r'prune.end_step=10 is the end of the gradual'),
  ]:
    with pytest.raises(ValueError, match=message):
      pruning.check_config(_prune_cfg(**overrides), 100)
  pruning.check_config(_prune_cfg(sparsity=0.0, schedule='cubic'), 100)  # Off: not read.
  pruning.check_config(_prune_cfg(begin_step=70), 0)  # The length is not known yet.
  inner = optax.sgd(0.1)
  assert pruning.wrap(inner, _prune_cfg(sparsity=0.0), 100) is inner
  with pytest.raises(ValueError, match=r'prune.sparsity=0.4: this model has no matrix'):
    pruning.wrap(inner, _prune_cfg(), 100).init({'dense': {'kernel': jnp.ones((2, 2))}})


VOCAB, LENGTH, BATCH = 128, 32, 16


def _batch(seed: int, poisoned: bool = False) -> dict:
  rng = np.random.default_rng(seed)
  return {
    'inputs': rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
    'targets': rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
    'weights': (rng.random((BATCH, LENGTH)) < 0.3).astype(np.float32),
    'segment_ids': np.ones((BATCH, LENGTH), np.int32),
    'positions': np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH)).astype(np.int32),
    'poison': np.full(BATCH, math.nan if poisoned else 0.0, np.float32),
  }


def _poisonable_loss(params, batch, rng, *, model):
  """token_lm's loss plus the sum of `poison` (NaN poisons the step)."""
  batch = dict(batch)
  poison = jnp.sum(batch.pop('poison'))
  loss, metrics = token_lm.loss_fn(params, batch, rng, model=model)
  return loss + poison, metrics


@functools.cache
def _sharded_setup():
  """bert-tiny MLM without dropout on a (data 4, fsdp 2) mesh; AdamW inside one-shot
  pruning at optimizer step 1 (the second applied update)."""
  model = heads.MaskedLM(
    presets.get_config(
      'bert-tiny', vocab_size=VOCAB, max_len=LENGTH, dropout_rate=0.0, attention_dropout_rate=0.0
    )
  )
  mesh = partitioning.make_mesh(types.SimpleNamespace(data=4, fsdp=2, tensor=1))
  rules = partitioning.logical_rules('fsdp_tp')
  cfg = _prune_cfg(sparsity=0.3, schedule='oneshot', begin_step=1)
  tx = pruning.wrap(optax.adamw(1e-3, weight_decay=0.01), cfg, total_steps=10)
  _, shardings = state_lib.abstract_state(model, tx, mesh=mesh, rules=rules, seq_len=LENGTH)
  batch_sharding = partitioning.batch_sharding(mesh)
  step = state_lib.jit_train_step(
    shardings, batch_sharding, mesh=mesh, rules=rules, model=model,
    loss_fn=_poisonable_loss, tx=tx, seed=0,
  )  # fmt: skip
  return types.SimpleNamespace(
    model=model, mesh=mesh, rules=rules, tx=tx, shardings=shardings, step=step,
    put=functools.partial(partitioning.global_batch, sharding=batch_sharding),
  )  # fmt: skip


def test_a_skipped_step_keeps_the_masks_and_they_survive_a_checkpoint(tmp_path):
  s = _sharded_setup()
  state, _ = state_lib.create(s.model, s.tx, mesh=s.mesh, rules=s.rules, seed=0, seq_len=LENGTH)
  state, _ = s.step(state, s.put(_batch(0)))  # Count 0: nothing pruned yet.
  assert pruning.achieved_sparsity(state.params) == 0.0
  before = jax.device_get(state.opt_state)
  state, metrics = s.step(state, s.put(_batch(1, poisoned=True)))  # Skipped: count stays 1.
  assert float(metrics[state_lib.SKIPPED_NONFINITE][0]) == 1.0
  after = jax.device_get(state.opt_state)
  assert int(after.count) == 1 and all(np.all(m) for m in jax.tree.leaves(after.masks))
  for got, want in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
    np.testing.assert_array_equal(got, want)
  state, _ = s.step(state, s.put(_batch(2)))  # Count 1: the one-shot pruning.
  zeros, total = pruning.zeros_in_pruned(state.params)
  assert int(zeros) == round(0.3 * total)  # Global scope: exact, to the weight.
  # Each mask is sharded as its parameter (the same logical names).
  masks, params = _by_name_sharding(state.opt_state.masks), _by_name_sharding(state.params)
  assert masks and all(masks[n] == params[n] for n in masks)
  assert any(spec != jax.sharding.PartitionSpec() for spec in masks.values())

  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2, save_every=1)
  assert checkpointer.save(3, state, {'shards': {}}, {'note': 'pruned'})
  checkpointer.close()
  reader = checkpointing.Checkpointer(str(tmp_path), keep=2, save_every=1, read_only=True)
  abstract, _ = state_lib.abstract_state(s.model, s.tx, mesh=s.mesh, rules=s.rules, seq_len=LENGTH)
  restored, _, _ = reader.restore(3, abstract)  # Digests verified, bool masks included.
  reader.close()
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  restored, _ = s.step(restored, s.put(_batch(3)))
  mask_of = _by_name(restored.opt_state.masks)
  values = _by_name(restored.params)
  assert all(not np.any(values[n][~m]) for n, m in mask_of.items())
  assert int(pruning.zeros_in_pruned(restored.params)[0]) == int(zeros)


def _by_name_sharding(tree) -> dict:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {pruning.param_name(p): x.sharding.spec for p, x in flat if x.ndim >= 2}


@pytest.mark.slow
def test_train_py_prunes_and_a_killed_run_resumes_with_its_masks(tmp_path, spm_path):
  """NEEDS training/harness.py to build `pruning.wrap(optimizers.build(...), config.prune,
  config.total_steps)`: without it no mask is in the checkpoint (see the message below)."""
  overrides = (
    *runs.TINY_OVERRIDES,
    '--config.total_steps=12',
    '--config.checkpoint_every_steps=3',
    f'--config.data.tokenizer_path={spm_path}',
    '--config.prune.sparsity=0.4',
    '--config.prune.scope=layer',
    '--config.prune.begin_step=0',
    '--config.prune.end_step=2',  # Masks at 0, 0.4 x 7/8 = 0.35, then 0.4 from step 2 on.
    '--config.prune.frequency=1',
  )
  workdir = str(tmp_path / 'run')
  killed = runs.run('train.py', workdir, *overrides, '--fault_kill_after_step=7', check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  reader = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  saved_step = reader.latest_step()  # 6, or 3 when step 6's async save was cut short.
  reader.close()
  assert saved_step in (3, 6)
  saved = _saved(workdir, saved_step)
  saved_masks = {n[len('opt_state/masks/') :]: m for n, m in saved.items() if '/masks/' in n}
  assert saved_masks, (
    'No pruning masks in the checkpoint: training/harness.py must wrap the optimizer '
    f'with training/pruning.wrap (saved leaves: {sorted(saved)[:5]} ...).'
  )
  assert int(saved['opt_state/count']) == saved_step
  resumed = runs.run('train.py', workdir, *overrides)
  assert f'Resumed from step {saved_step}' in resumed.stdout
  step, final = soak.final_state(workdir)
  assert step == 12 and int(final['opt_state/count']) == 12
  masks = {n[len('opt_state/masks/') :]: m for n, m in final.items() if '/masks/' in n}
  assert masks.keys() == saved_masks.keys()
  assert all(n.endswith('/kernel') and '/block_' in n for n in masks)
  for name, mask in masks.items():
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, saved_masks[name], err_msg=name)  # Fixed after 2.
    for state in (saved, final):
      weights = state[f'params/{name}']
      assert not np.any(weights[~mask]), name  # Pruned: exactly zero.
      assert abs(np.sum(weights == 0) - 0.4 * weights.size) <= 1, name  # Layer scope.
  assert len(glob.glob(f'{workdir}/logs/train-*.log')) == 2


def _saved(workdir: str, step: int) -> dict:
  """{leaf name: array} of checkpoint `step`, read through the project's checkpointer."""
  checkpointer = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  state, _, _ = checkpointer.restore_as_saved(step)
  checkpointer.close()
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  return {'/'.join(_key(k) for k in path): np.asarray(x) for path, x in flat}


def _key(key) -> str:
  return str(getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key))))
