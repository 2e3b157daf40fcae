"""Tests of models/transformer.py, models/heads.py and models/presets.py."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, presets, transformer

VOCAB = 64
TOL = 1e-5
LENGTH = 16  # One row length (and B alone, 7) for all tests: fewer XLA compiles.
PRESETS = ('bert-tiny', 'gpt2-tiny')


def _cfg(preset: str, **overrides) -> transformer.TransformerConfig:
  return presets.get_config(preset, vocab_size=VOCAB, max_len=64, **overrides)


def _head(cfg):
  return heads.CausalLM(cfg) if cfg.causal else heads.MaskedLM(cfg)


@functools.cache
def _variables(preset: str) -> dict:
  """`init` of the preset's pretraining model, shared by the tests (XLA compiles are slow)."""
  tokens = jnp.ones((1, LENGTH), jnp.int32)
  return _head(_cfg(preset)).init(jax.random.key(0), tokens, tokens)


def _apply(model, params, tokens, segment_ids, positions, **kwargs):
  """Runs `model` on one row ([length] arrays) and returns that row's output."""
  return np.asarray(
    model.apply(
      {'params': params},
      jnp.asarray(tokens, jnp.int32)[None],
      jnp.asarray(segment_ids, jnp.int32)[None],
      jnp.asarray(positions, jnp.int32)[None],
      **kwargs,
    )[0]
  )


def _models(preset: str):
  """(name, model, params) for the bare stack and the preset's pretraining head."""
  cfg = _cfg(preset)
  params = _variables(preset)['params']
  stack_params = params['decoder' if cfg.causal else 'encoder']
  return [('encoder', transformer.Encoder(cfg), stack_params), ('head', _head(cfg), params)]


DOC_A, DOC_B = np.split(np.random.default_rng(0).integers(7, VOCAB, size=12), [5])  # Not special.


@pytest.mark.parametrize('preset', PRESETS)
def test_packed_document_is_seen_as_alone(preset):
  tokens = np.concatenate([DOC_A, DOC_B, np.zeros(4, int)])  # A, B, then padding.
  segment_ids = np.array([1] * 5 + [2] * 7 + [0] * 4)
  positions = np.concatenate([np.arange(5), np.arange(7), np.zeros(4, int)])
  for name, model, params in _models(preset):
    packed = _apply(model, params, tokens, segment_ids, positions)
    alone = _apply(model, params, DOC_B, np.ones(7), np.arange(7))
    np.testing.assert_allclose(packed[5:12], alone, atol=TOL, err_msg=name)
    # Control: one segment over both documents does change B's outputs.
    leaky = _apply(model, params, tokens, np.minimum(segment_ids, 1), positions)
    assert np.abs(leaky[5:12] - alone).max() > 1e-3, name


@pytest.mark.parametrize('preset', PRESETS)
def test_causality(preset):
  length, t = LENGTH, 5
  tokens = np.random.default_rng(1).integers(7, VOCAB, size=length)
  changed = tokens.copy()
  changed[t + 1 :] = (changed[t + 1 :] + 1 - 7) % (VOCAB - 7) + 7  # Every future token differs.
  ones, positions = np.ones(length), np.arange(length)
  for name, model, params in _models(preset):
    before = _apply(model, params, tokens, ones, positions)
    after = _apply(model, params, changed, ones, positions)
    past_change = np.abs(after[: t + 1] - before[: t + 1]).max()
    if preset.startswith('gpt2'):
      assert past_change < TOL, name  # The decoder cannot see the future ...
    else:
      assert past_change > 1e-3, name  # ... the encoder can.
    assert np.abs(after[t + 1 :] - before[t + 1 :]).max() > 1e-3, name


@pytest.mark.parametrize('preset', PRESETS)
def test_padding_changes_nothing(preset):
  tokens, n = DOC_B, len(DOC_B)
  for name, model, params in _models(preset):
    plain = _apply(model, params, tokens, np.ones(n), np.arange(n))
    padded = _apply(
      model,
      params,
      np.concatenate([tokens, np.zeros(9, int)]),
      np.concatenate([np.ones(n), np.zeros(9)]),
      np.concatenate([np.arange(n), np.zeros(9, int)]),
    )
    np.testing.assert_allclose(padded[:n], plain, atol=TOL, err_msg=name)
    assert np.isfinite(padded).all(), name


def test_pre_norm_and_post_norm_differ():
  post = _cfg('bert-tiny')
  pre = post.replace(pre_norm=True)
  params = _variables('bert-tiny')['params']['encoder']
  args = (DOC_B, np.ones(7), np.arange(7))
  out_post = _apply(transformer.Encoder(post), params, *args)
  out_pre = _apply(transformer.Encoder(pre), params, *args)
  assert np.isfinite(out_pre).all() and np.isfinite(out_post).all()
  assert np.abs(out_pre - out_post).max() > 1e-2


def test_attention_mask_values():
  segment_ids = jnp.array([[1, 1, 2, 2, 0], [1, 1, 1, 0, 0]])
  a = [1, 1, 0, 0, 0]
  b = [0, 0, 1, 1, 0]
  z = [0, 0, 0, 0, 0]
  bidirectional = np.array(
    [
      [a, a, b, b, z],
      [[1, 1, 1, 0, 0]] * 3 + [z, z],
    ],
    bool,
  )
  causal = np.array(
    [
      [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], z],
      [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], z, z],
    ],
    bool,
  )
  for is_causal, expected in ((False, bidirectional), (True, causal)):
    mask = transformer.attention_mask(segment_ids, segment_ids, is_causal)
    assert mask.shape == (2, 1, 5, 5)
    assert mask.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(mask)[:, 0], expected)


@pytest.mark.parametrize('preset', PRESETS)
def test_every_param_has_logical_axis_names(preset):
  variables = _variables(preset)  # model.init of the preset's model.
  assert set(variables) == {'params'}
  leaves = jax.tree.leaves(variables['params'], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) > 10
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), type(leaf)
    assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)
    assert all(isinstance(name, str) for name in leaf.names), leaf.names


@pytest.mark.parametrize('preset', PRESETS)
def test_dropout_paths(preset):
  tokens = np.concatenate([DOC_A, DOC_B, np.zeros(4, int)])
  segment_ids = np.array([1] * 5 + [2] * 7 + [0] * 4)
  positions = np.concatenate([np.arange(5), np.arange(7), np.zeros(4, int)])
  args = (tokens, segment_ids, positions)
  cfg = _cfg(preset)
  assert cfg.dropout_rate > 0 and cfg.attention_dropout_rate > 0
  params = _variables(preset)['params']
  train = [
    _apply(_head(cfg), params, *args, deterministic=False, rngs={'dropout': jax.random.key(i)})
    for i in (1, 2)
  ]
  evaluation = _apply(_head(cfg), params, *args, deterministic=True)
  assert all(np.isfinite(out).all() for out in train)
  assert np.abs(train[0] - train[1]).max() > 1e-4  # Dropout is really applied.
  assert np.abs(train[0] - evaluation).max() > 1e-4

  # A tiny attention dropout takes the explicit-softmax training path; with no
  # other dropout it must equal the dot_product_attention evaluation path.
  quiet = cfg.replace(dropout_rate=0.0, attention_dropout_rate=1e-9)
  explicit = _apply(
    _head(quiet), params, *args, deterministic=False, rngs={'dropout': jax.random.key(1)}
  )
  reference = _apply(_head(quiet), params, *args, deterministic=True)
  np.testing.assert_allclose(explicit, reference, atol=TOL)
  np.testing.assert_allclose(reference, evaluation, atol=TOL)
