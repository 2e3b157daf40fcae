"""Sequence parallelism ('fsdp_tp_sp'): rows split over the `sequence` mesh axis compute
what one device computes (forward, gradients, train steps), on 8 emulated CPU devices."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import quickstart
from models import attention, heads, presets
from tests.training import test_sharding
from training import partitioning

LENGTH, VOCAB = 32, 64


def _mesh(data=1, fsdp=1, sequence=1, tensor=1, strategy='fsdp_tp_sp'):
  cfg = types.SimpleNamespace(
    data=data, fsdp=fsdp, sequence=sequence, tensor=tensor, strategy=strategy
  )
  devices = jax.devices()[: data * fsdp * sequence * tensor]
  return partitioning.make_mesh(cfg, devices=devices), partitioning.logical_rules(strategy)


def _batch(seed: int = 0) -> dict:
  """4 rows of LENGTH: packed documents (segment ids, positions restarting), end padding."""
  rng = np.random.default_rng(seed)
  lengths = [[12, 9, 11], [20, 7], [32], [5, 14, 6]]  # Row 1 ends in 5 padding positions.
  segments = np.zeros((4, LENGTH), np.int32)
  positions = np.zeros((4, LENGTH), np.int32)
  for row, docs in enumerate(lengths):
    start = 0
    for doc, n in enumerate(docs):
      segments[row, start : start + n] = doc + 1
      positions[row, start : start + n] = np.arange(n)
      start += n
  tokens = np.where(segments > 0, rng.integers(3, VOCAB, size=(4, LENGTH)), 0)
  weights = rng.normal(size=(4, LENGTH, VOCAB)).astype(np.float32)
  return dict(tokens=tokens, segments=segments, positions=positions, weights=weights)


def _model(preset: str):
  cfg = presets.get_config(preset, vocab_size=VOCAB, max_len=64)
  return heads.CausalLM(cfg) if cfg.causal else heads.MaskedLM(cfg)


def _loss(model):
  """A scalar of every logit (random weights), with dropout: its masks must not depend
  on how the rows are split either."""

  def loss(params, batch):
    logits = model.apply(
      {'params': params},
      batch['tokens'],
      batch['segments'],
      batch['positions'],
      deterministic=False,
      rngs={'dropout': jax.random.key(3)},
    )  # [batch, length, vocab]
    return jnp.sum(logits * batch['weights']), logits

  return jax.value_and_grad(loss, has_aux=True)


def _run(model, params, batch, mesh=None, rules=()):
  """(loss, logits), grads of `_loss`, unsharded, or jitted on `mesh` with the params
  sharded by `rules` and the batch split over the data axes."""
  if mesh is None:
    return jax.jit(_loss(model))(params, batch)
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(model.init, jax.random.key(0), *(batch[k] for k in ('tokens',) * 3))
    shardings = partitioning.logical_shardings(boxed, mesh, rules)['params']
  fn = jax.jit(_loss(model), in_shardings=(shardings, partitioning.batch_sharding(mesh)))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return fn(jax.device_put(params, shardings), batch)


@pytest.mark.parametrize(
  'preset, shape',
  [
    ('bert-tiny', dict(data=2, sequence=4)),  # Bidirectional, packed; length 4-way.
    ('gpt2-tiny', dict(fsdp=2, sequence=2, tensor=2)),  # Causal; length 2-way, with FSDP + TP.
  ],
)
def test_split_rows_compute_what_one_device_does(preset, shape):
  model = _model(preset)
  batch = _batch()
  params = nn.unbox(model.init(jax.random.key(0), batch['tokens'], batch['segments']))['params']
  (loss, logits), grads = _run(model, params, batch)
  mesh, rules = _mesh(**shape)
  (sp_loss, sp_logits), sp_grads = _run(model, params, batch, mesh, rules)
  # Really split: the logits stay sharded over `sequence` along the length.
  assert sp_logits.sharding.spec[1] == 'sequence', sp_logits.sharding
  assert sp_logits.addressable_shards[0].data.shape[1] == LENGTH // shape['sequence']
  np.testing.assert_allclose(np.asarray(sp_logits), np.asarray(logits), atol=2e-5)
  np.testing.assert_allclose(float(sp_loss), float(loss), rtol=1e-5)
  flat, sp_flat = jax.tree.leaves_with_path(grads), jax.tree.leaves(sp_grads)
  for (path, want), got in zip(flat, sp_flat, strict=True):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(
      np.asarray(got), np.asarray(want), atol=2e-5 * scale, err_msg=jax.tree_util.keystr(path)
    )


def test_sequence_strategy_rules_and_errors():
  mesh, rules = _mesh(data=2, sequence=4)
  assert dict(mesh.shape) == {'data': 2, 'fsdp': 1, 'sequence': 4, 'tensor': 1}
  spec = nn.logical_to_mesh_sharding(P('batch', 'length', 'act_embed'), mesh, rules).spec
  assert spec == P(('data', 'fsdp'), 'sequence', None)
  kv = nn.logical_to_mesh_sharding(P('batch', 'kv_length', 'act_heads', 'act_kv'), mesh, rules)
  assert kv.spec == P(('data', 'fsdp'), None, 'tensor', None)  # K/V: the whole row.
  assert nn.logical_to_mesh_sharding(P('embed', 'mlp'), mesh, rules).spec == P(
    ('fsdp', 'sequence'), 'tensor'
  )
  partitioning.check_length(64, mesh)
  with pytest.raises(ValueError, match=r'seq_len=30 cannot be split over the 4 sequence'):
    partitioning.check_length(30, mesh)
  with pytest.raises(ValueError, match=r"mesh.sequence=4 .*mesh.strategy='fsdp_tp'.*'fsdp_tp_sp'"):
    _mesh(data=2, sequence=4, strategy='fsdp_tp')
  # Split rows keep attention on the XLA path (the kernels do not split the sequence).
  q = jnp.zeros((2, 128, 2, 64), jnp.float32)
  mask = attention.SegmentMask.self_attend(jnp.ones((2, 128), jnp.int32))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    assert attention.select_implementation('', q, q, mask, platform='tpu') == 'xla'
    with pytest.raises(ValueError, match=r'length axis is sharded \(mesh.sequence > 1\)'):
      attention.select_implementation('splash', q, q, mask, platform='tpu')
  assert attention.select_implementation('', q, q, mask, platform='tpu') == 'splash'


def _config(spm_path, sequence: int, strategy: str, preset: str, objective: str):
  c = quickstart.get_config()
  c.model.preset, c.objective.module = preset, objective
  c.batch_size, c.seq_len = 8, 64
  c.data.tokenizer_path = spm_path
  c.optimizer.warmup_steps, c.optimizer.warmup_ratio = 1, 0.0
  c.total_steps = 3
  c.mesh.data, c.mesh.fsdp, c.mesh.sequence, c.mesh.tensor = 8 // sequence, 1, sequence, 1
  c.mesh.strategy = strategy
  return c


@pytest.mark.slow
@pytest.mark.parametrize(
  'preset, objective', [('bert-tiny', 'objectives.mlm'), ('gpt2-tiny', 'objectives.clm')]
)
def test_train_steps_match_data_parallelism(spm_path, preset, objective):
  dp_losses, dp_state = test_sharding.train_steps(
    _config(spm_path, 1, 'fsdp_tp', preset, objective)
  )
  sp_losses, sp_state = test_sharding.train_steps(
    _config(spm_path, 4, 'fsdp_tp_sp', preset, objective)
  )
  np.testing.assert_allclose(sp_losses, dp_losses, rtol=0, atol=1e-5)
  assert sp_losses[2] < sp_losses[0]  # It trains.
  kernel = sp_state.params[next(iter(sp_state.params))]['block_0']['mlp']['wi']['kernel']
  assert kernel.sharding.spec == P(('fsdp', 'sequence'), 'tensor')  # [embed, mlp]
  leaves = zip(jax.tree.leaves(sp_state.params), jax.tree.leaves(dp_state.params), strict=True)
  for got, want in leaves:
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
