"""Objective combination: a trunk (MLM) plus auxiliary heads and losses, with weights."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import heads, presets
from objectives import api, multitask
from tests.objective_config import objective_config

VOCAB, LENGTH = 64, 16


def _cfg(parts, **keys):
  return objective_config(parts=parts, mask_rate=0.15, **keys)


def _model_cfg():
  return presets.get_config(
    'bert-tiny', vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, mlp_dim=64
  )


def test_parse_parts():
  assert multitask.parse_parts('objectives.mlm:2, objectives.sentence_order') == [
    ('objectives.mlm', 2.0),
    ('objectives.sentence_order', 1.0),
  ]
  with pytest.raises(ValueError, match='at least one auxiliary'):
    multitask.parse_parts('objectives.mlm:1.0')
  with pytest.raises(ValueError, match='must be a number'):
    multitask.parse_parts('objectives.mlm:x,objectives.sentence_order')


def test_configure_rejects_what_cannot_combine():
  with pytest.raises(ValueError, match='lacks AUX_HEAD'):
    api.load('objectives.multitask', _cfg('objectives.mlm,objectives.clm'))
  with pytest.raises(ValueError, match='cannot be imported'):
    api.load('objectives.multitask', _cfg('objectives.mlm,objectives.nope'))
  causal = api.load('objectives.multitask', _cfg('objectives.clm,objectives.sentence_order'))
  gpt = presets.get_config('gpt2-tiny', vocab_size=VOCAB)
  with pytest.raises(ValueError, match='must train heads.MaskedLM'):
    causal.build_model(gpt)


def _pair_batch(rng):
  """Two sentence-pair rows and one padding row, with MLM targets and NSP labels."""
  tokens = rng.integers(5, VOCAB, (3, LENGTH)).astype(np.int32)
  segment_ids = np.ones((3, LENGTH), np.int32)
  segment_ids[1, 12:] = 0
  segment_ids[2] = 0
  token_types = (np.arange(LENGTH) >= 7).astype(np.int32)[None].repeat(3, 0)
  weights = (rng.random((3, LENGTH)) < 0.3) & (segment_ids > 0)
  return {
    'inputs': np.where(weights, 4, tokens).astype(np.int32),
    'targets': tokens,
    'weights': weights.astype(np.float32),
    'segment_ids': segment_ids,
    'positions': np.arange(LENGTH, dtype=np.int32)[None].repeat(3, 0),
    'token_types': token_types,
    'pair_labels': np.array([1, 0, 1], np.int32),
  }


def test_loss_is_the_weighted_sum_of_the_parts_under_jit():
  objective = api.load(
    'objectives.multitask', _cfg('objectives.mlm:1.0,objectives.sentence_order:0.5')
  )
  model = objective.build_model(_model_cfg())
  assert model.aux_heads == ('sentence_pair',)
  batch = _pair_batch(np.random.default_rng(0))
  params = jax.jit(model.init)(
    jax.random.key(0), *(jnp.asarray(batch[k]) for k in multitask._MODEL_INPUTS)
  )
  params = params['params']
  assert set(params['aux_sentence_pair']) == {'pooler', 'classifier'}

  loss_fn = jax.jit(lambda p, b: objective.loss_fn(p, b, None, model=model))
  loss, metrics = loss_fn(params, batch)

  # By hand from the model's own outputs: masked-token MLM mean + 0.5 x NSP mean over real rows.
  inputs = [batch[k] for k in multitask._MODEL_INPUTS]
  logits, outputs = jax.jit(model.apply)({'params': params}, *inputs)
  logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)))
  w = batch['weights']
  picked = np.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
  mlm = -(picked * w).sum() / w.sum()
  pair_logp = np.asarray(jax.nn.log_softmax(outputs['sentence_pair']))
  nsp = -np.mean([pair_logp[i, batch['pair_labels'][i]] for i in (0, 1)])  # Row 2 is padding.
  np.testing.assert_allclose(float(loss), mlm + 0.5 * nsp, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'][0] / metrics['loss'][1], mlm, rtol=1e-5)
  nsp_sum, rows = metrics['sentence_order/loss']
  assert float(rows) == 2.0
  np.testing.assert_allclose(nsp_sum / rows, nsp, rtol=1e-5)
  assert set(metrics) == {
    'loss',
    'accuracy',
    'sentence_order/loss',
    'sentence_order/accuracy',
    'total_loss',
  }

  grads = jax.jit(
    jax.grad(lambda p: objective.loss_fn(p, batch, jax.random.key(1), model=model)[0])
  )(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(optax.tree.norm(grads['aux_sentence_pair'])) > 0


def test_preprocess_adds_token_types_and_labels_to_the_trunk_batch():
  objective = api.load('objectives.multitask', _cfg('objectives.mlm,objectives.sentence_order'))
  tokenizer = types.SimpleNamespace(
    special_ids=np.arange(5), vocab_size=VOCAB, mask_id=4, cls_id=2, sep_id=3
  )
  rng = np.random.default_rng(0)
  rows = {
    'tokens': rng.integers(5, VOCAB, (4, LENGTH)).astype(np.int32),
    'token_types': np.zeros((4, LENGTH), np.int32),
    'segment_ids': np.ones((4, LENGTH), np.int32),
    'positions': np.arange(LENGTH, dtype=np.int32)[None].repeat(4, 0),
    'pair_labels': np.array([0, 1, 1, 0], np.int32),
    'epoch': np.zeros(4, np.int64),
    'example_id': np.arange(4),
  }
  rows['tokens'][:, 0] = 2
  batch = objective.make_preprocess(
    _cfg('', mask_token_rate=0.8, random_token_rate=0.1), tokenizer, 0
  )(rows)
  np.testing.assert_array_equal(batch['pair_labels'], rows['pair_labels'])
  np.testing.assert_array_equal(batch['token_types'], rows['token_types'])
  assert not batch['weights'][:, 0].any()  # [CLS] is never masked.
  with pytest.raises(ValueError, match='sentence-pair rows'):
    objective.make_preprocess(_cfg('', mask_token_rate=0.8, random_token_rate=0.1), tokenizer, 0)(
      {k: v for k, v in rows.items() if k != 'pair_labels'}
    )


def test_span_boundary_head_reads_only_the_boundaries_and_the_offset():
  cfg = _model_cfg()
  head = heads.SpanBoundaryHead(cfg)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(1, LENGTH, cfg.d_model)), jnp.float32)
  spans = {
    'span_left': jnp.array([[0, 0, 3, 3, 3, 0] + [0] * 10]),
    'span_right': jnp.array([[0, 0, 7, 7, 7, 0] + [0] * 10]),
    'span_offset': jnp.array([[0, 0, 0, 1, 2, 0] + [0] * 10]),
  }
  params = head.init(jax.random.key(0), x, spans)
  out = head.apply(params, x, spans)
  assert out.shape == (1, LENGTH, cfg.token_dim)
  # Positions 2-4 of the span (3, 7) depend on states 3 and 7 only, and differ by offset.
  moved = head.apply(params, x.at[:, 5].add(1.0), spans)
  np.testing.assert_allclose(moved[0, 2:5], out[0, 2:5], atol=1e-6)
  assert not np.allclose(head.apply(params, x.at[:, 7].add(1.0), spans)[0, 2:5], out[0, 2:5])
  assert not np.allclose(out[0, 2], out[0, 3])
