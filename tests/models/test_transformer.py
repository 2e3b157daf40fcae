"""Tests of models/transformer.py, models/heads.py and models/presets.py."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import attention, heads, presets, transformer

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
  return jax.jit(_head(_cfg(preset)).init)(jax.random.key(0), tokens, tokens)


def _apply(model, params, tokens, segment_ids, positions, **kwargs):
  """Runs `model` on one row ([length] arrays) and returns that row's output."""
  apply = jax.jit(functools.partial(model.apply, **kwargs))  # Compiled, not run op by op.
  return np.asarray(
    apply(
      {'params': params},
      jnp.asarray(tokens, jnp.int32)[None],
      jnp.asarray(segment_ids, jnp.int32)[None],
      jnp.asarray(positions, jnp.int32)[None],
    )[0]
  )


def _models(preset: str):
  """(name, model, params) for the bare stack and the preset's pretraining head."""
  cfg = _cfg(preset)
  params = _variables(preset)['params']
  stack_params = params['decoder' if cfg.causal else 'encoder']
  return [('encoder', transformer.Stack(cfg), stack_params), ('head', _head(cfg), params)]


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
  out_post = _apply(transformer.Stack(post), params, *args)
  out_pre = _apply(transformer.Stack(pre), params, *args)
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
    mask = attention.attention_mask(segment_ids, segment_ids, is_causal)
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


# Per-position attention kinds (UniLM, objectives/unilm.py)

BI, L2R, R2L = attention.BIDIRECTIONAL, attention.LEFT_TO_RIGHT, attention.RIGHT_TO_LEFT
# One row of LENGTH: a bidirectional, a left-to-right, a right-to-left and a
# seq2seq segment (2 source, 2 target tokens), then padding.
KINDS_SEGMENTS = np.array([1] * 3 + [2] * 3 + [3] * 3 + [4] * 4 + [0] * 3)
KINDS_ROW = np.array([BI] * 3 + [L2R] * 3 + [R2L] * 3 + [BI, BI, L2R, L2R] + [BI] * 3)


def _expected_kinds_mask() -> np.ndarray:
  """KINDS_ROW's mask [LENGTH, LENGTH] written out block by block."""
  expected = np.zeros((LENGTH, LENGTH), bool)
  expected[0:3, 0:3] = True  # Bidirectional: the whole segment.
  expected[3:6, 3:6] = np.tril(np.ones((3, 3), bool))  # Left-to-right: j <= i.
  expected[6:9, 6:9] = np.triu(np.ones((3, 3), bool))  # Right-to-left: j >= i.
  expected[9:11, 9:11] = True  # Seq2seq source: the source only.
  expected[11:13, 9:11] = True  # Target: the source ...
  expected[11:13, 11:13] = np.tril(np.ones((2, 2), bool))  # ... and the target up to itself.
  return expected


def test_attention_kinds_mask_values():
  segment_ids = jnp.asarray(np.stack([KINDS_SEGMENTS, np.minimum(KINDS_SEGMENTS, 1)]))
  kinds = jnp.asarray(np.stack([KINDS_ROW, np.full(LENGTH, R2L)]))
  mask = attention.attention_kinds_mask(segment_ids, kinds)
  assert mask.shape == (2, 1, LENGTH, LENGTH) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(np.asarray(mask)[0, 0], _expected_kinds_mask())
  # One right-to-left segment of 13 tokens; padding neither sees nor is seen.
  expected = np.zeros((LENGTH, LENGTH), bool)
  expected[:13, :13] = np.triu(np.ones((13, 13), bool))
  np.testing.assert_array_equal(np.asarray(mask)[1, 0], expected)
  # Uniform kinds give today's masks.
  same = (segment_ids, segment_ids)
  for kind, causal in ((BI, False), (L2R, True)):
    uniform = attention.attention_kinds_mask(segment_ids, jnp.full(segment_ids.shape, kind))
    np.testing.assert_array_equal(uniform, attention.attention_mask(*same, causal))


def test_attention_kinds_dependence_through_the_encoder():
  """Output i changes with input token j exactly where the mask lets i see j."""
  cfg = _cfg('bert-tiny')
  params = _variables('bert-tiny')['params']['encoder']
  tokens = np.random.default_rng(2).integers(7, VOCAB, size=LENGTH)
  perturbed = np.repeat(tokens[None], LENGTH + 1, 0)  # Row j + 1 changes token j.
  perturbed[np.arange(1, LENGTH + 1), np.arange(LENGTH)] = (tokens - 7 + 1) % (VOCAB - 7) + 7
  rows = lambda a: jnp.asarray(np.repeat(a[None], LENGTH + 1, 0), jnp.int32)  # noqa: E731
  positions = np.concatenate([np.arange(n) for n in (3, 3, 3, 4, 3)])
  out = transformer.Stack(cfg).apply(
    {'params': params},
    jnp.asarray(perturbed, jnp.int32),
    rows(KINDS_SEGMENTS),
    rows(positions),
    attention_kinds=rows(KINDS_ROW),
  )  # [1 + LENGTH, LENGTH, embed]
  changed = np.abs(np.asarray(out[1:] - out[:1])).max(axis=-1) > 1e-5  # [j, i]
  real = KINDS_SEGMENTS > 0
  expected = _expected_kinds_mask().T & real[:, None] & real[None, :]
  np.testing.assert_array_equal(changed[:, real], expected[:, real])


@pytest.mark.parametrize('preset', PRESETS)
def test_no_attention_kinds_is_todays_stack(preset):
  tokens = np.concatenate([DOC_A, DOC_B, np.zeros(4, int)])
  segment_ids = np.array([1] * 5 + [2] * 7 + [0] * 4)
  positions = np.concatenate([np.arange(5), np.arange(7), np.zeros(4, int)])
  args = (tokens, segment_ids, positions)
  (_, encoder, encoder_params), (_, head, params) = _models(preset)
  plain = _apply(encoder, encoder_params, *args)
  np.testing.assert_array_equal(_apply(encoder, encoder_params, *args, attention_kinds=None), plain)
  if preset.startswith('gpt2'):  # A causal stack has no kinds to mix.
    with pytest.raises(ValueError, match='attention_kinds apply to a bidirectional encoder'):
      _apply(encoder, encoder_params, *args, attention_kinds=jnp.zeros((1, LENGTH), jnp.int32))
    return
  plain = _apply(head, params, *args)
  np.testing.assert_array_equal(_apply(head, params, *args, attention_kinds=None), plain)
  # All-bidirectional kinds are today's encoder; all-left-to-right, today's causal stack.
  cfg = _cfg(preset)
  kinds = lambda kind: jnp.full((1, LENGTH), kind, jnp.int32)  # noqa: E731
  np.testing.assert_array_equal(_apply(_head(cfg), params, *args, attention_kinds=kinds(BI)), plain)
  causal = _apply(heads.MaskedLM(cfg.replace(causal=True)), params, *args)
  left_to_right = _apply(_head(cfg), params, *args, attention_kinds=kinds(L2R))
  np.testing.assert_allclose(left_to_right, causal, atol=TOL)


def test_attention_kinds_on_both_attention_paths():
  """The explicit-softmax (attention dropout) path and jax.nn.dot_product_attention agree."""
  cfg = _cfg('bert-tiny')
  params = _variables('bert-tiny')['params']
  tokens = np.random.default_rng(3).integers(7, VOCAB, size=LENGTH)
  positions = np.concatenate([np.arange(n) for n in (3, 3, 3, 4, 3)])
  args = (tokens, KINDS_SEGMENTS, positions)
  kinds = jnp.asarray(KINDS_ROW, jnp.int32)[None]
  quiet = cfg.replace(dropout_rate=0.0, attention_dropout_rate=1e-9)
  explicit = _apply(
    _head(quiet),
    params,
    *args,
    deterministic=False,
    rngs={'dropout': jax.random.key(1)},
    attention_kinds=kinds,
  )
  reference = _apply(_head(quiet), params, *args, attention_kinds=kinds)
  np.testing.assert_allclose(explicit, reference, atol=TOL)
  assert np.isfinite(reference).all()
  assert np.abs(reference - _apply(_head(quiet), params, *args)).max() > 1e-3  # Kinds matter.
