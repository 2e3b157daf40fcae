"""Tests of models/xlnet.py: sizes, the two streams' masks, what a prediction can see, memory."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import presets, xlnet

VOCAB = 31


def _by_hand(layers, d, heads, mlp, vocab=32000) -> int:
  """XLNetModel's parameters written out: per layer q, k, v, o, r [d, heads, d / heads], three
  biases [heads, d / heads], two segment embeddings, the feed-forward with biases and two
  LayerNorms; then the word embedding and the mask embedding."""
  layer = 5 * d * d + 3 * d + 2 * d + (d * mlp + mlp + mlp * d + d) + 2 * 2 * d
  del heads  # heads x head_dim = d whatever the split.
  return layers * layer + vocab * d + d


@pytest.mark.parametrize(
  'name, shape', [('xlnet-base-cased', (12, 768, 12, 3072)), ('xlnet-large-cased', (24, 1024, 16, 4096)),
                  ('xlnet-tiny', (2, 128, 2, 512))],
)  # fmt: skip
def test_param_counts_by_hand(name, shape):
  assert presets.count_params(presets.get_config(name)) == _by_hand(*shape)


def test_base_count_is_the_released_one():
  # HF's XLNetModel('xlnet-base-cased') holds 116,718,336 parameters (116.7M); the LM bias of
  # XLNetLMHeadModel is a pretraining head and is not counted.
  assert _by_hand(12, 768, 12, 3072) == 116_718_336
  assert presets.count_params(presets.get_config('xlnet-base-cased')) == 116_718_336


def test_flops_per_token_by_hand():
  cfg = xlnet.XLNetConfig(vocab_size=VOCAB, num_layers=2, d_model=16, num_heads=2, mlp_dim=32)
  # One chunk of 12 tokens, 2 predicted (K = 6): no memory, 23 distances.
  content = 12 * (2 * 16 * 16 + 2 * 16 * 32) + 12 * 2 * 16 * 16 + 23 * 16 * 16 + 12 * 16 * (24 + 23)
  query = 2 * (2 * 16 * 16 + 2 * 16 * 32) + 2 * 16 * (24 + 23)
  expected = 6 * (2 * (content + query) + 2 * 16 * VOCAB) / 12
  assert cfg.train_flops_per_token(12, chunks=1) == pytest.approx(expected)


def _cfg(**overrides):
  fields = dict(vocab_size=VOCAB, num_layers=2, d_model=16, num_heads=2, mlp_dim=32)
  return xlnet.XLNetConfig(**{**fields, **overrides})


def random_params(model, *inputs, seed=0):
  """Every parameter N(0, 0.3^2), biases and norms included: no term starts at zero, so a
  term that is wired wrongly changes the outputs. Shapes from the abstract init."""
  boxed = jax.eval_shape(model.init, jax.random.key(0), *inputs)['params']
  rng = np.random.default_rng(seed)
  fill = lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.3, x.dtype)  # noqa: E731
  return jax.tree.map(fill, boxed)


@functools.cache
def _model_and_params():
  model = xlnet.XLNet(_cfg())
  return model, nn.unbox(random_params(model, *model.init_inputs(12)))


def test_every_param_has_logical_axis_names():
  model = xlnet.XLNetLM(_cfg())
  boxed = random_params(model, *model.init_inputs(12))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) == 3 + 2 * 17  # Word and mask embeddings, LM bias; 17 per layer.
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), type(leaf)
    assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)


def _visible_by_definition(ranks, segment_ids, queries, strict, mem_segment_ids=None):
  """[batch, queries, mem + length]: the masks written as loops over (query, key)."""
  batch, length = ranks.shape
  mem = 0 if mem_segment_ids is None else mem_segment_ids.shape[1]
  out = np.zeros((batch, queries.shape[1], mem + length), bool)
  for b in range(batch):
    for a, i in enumerate(queries[b]):
      for j in range(mem + length):
        if j < mem:  # The memory precedes the whole chunk in the order.
          out[b, a, j] = mem_segment_ids[b, j] == segment_ids[b, i] > 0
          continue
        k = j - mem
        earlier = ranks[b, k] < ranks[b, i] if strict else ranks[b, k] <= ranks[b, i]
        out[b, a, j] = segment_ids[b, k] == segment_ids[b, i] > 0 and earlier
  return out


@pytest.mark.parametrize('with_memory', [False, True])
def test_masks_let_a_target_see_only_earlier_tokens_of_its_document(with_memory):
  rng = np.random.default_rng(1)
  batch, length, mem, preds = 3, 14, 5, 4
  segment_ids = np.sort(rng.integers(0, 4, (batch, length)), axis=1)[:, ::-1].copy()
  ranks = rng.integers(0, 4, (batch, length)) * (segment_ids > 0)
  target_positions = np.stack([rng.choice(length, preds, replace=False) for _ in range(batch)])
  mem_segment_ids = rng.integers(0, 4, (batch, mem)) if with_memory else None
  content, query = xlnet.attention_masks(ranks, segment_ids, target_positions, mem_segment_ids)
  all_positions = np.broadcast_to(np.arange(length), (batch, length))
  np.testing.assert_array_equal(
    content, _visible_by_definition(ranks, segment_ids, all_positions, False, mem_segment_ids)
  )
  np.testing.assert_array_equal(
    query, _visible_by_definition(ranks, segment_ids, target_positions, True, mem_segment_ids)
  )
  # A query never sees its own token; the content stream always does (outside padding).
  start = mem if with_memory else 0
  diagonal = np.take_along_axis(np.asarray(query)[..., start:], target_positions[..., None], -1)
  assert not diagonal.any()
  own = np.diagonal(np.asarray(content)[..., start:], axis1=1, axis2=2)
  np.testing.assert_array_equal(own, segment_ids > 0)


# One row: document 1 at 0..6 (targets at 1, 3, 5), document 2 at 7..10 (targets 8, 10), padding.
SEGMENTS = np.array([[1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 0]])
RANKS = np.array([[0, 2, 0, 1, 0, 3, 0, 0, 1, 0, 2, 0]])
TARGETS = np.array([[1, 3, 5, 8, 10]])


def test_a_prediction_depends_exactly_on_the_tokens_before_it_in_the_order():
  """Perturb each input token in turn: the query stream's output at target i changes iff
  the token is of i's document and strictly earlier in its order (through both layers)."""
  model, params = _model_and_params()
  tokens = jnp.asarray(np.arange(12)[None] * 2 + 3)
  run = jax.jit(lambda t: model.apply({'params': params}, t, SEGMENTS, RANKS, TARGETS)[1])
  base = np.asarray(run(tokens))  # [1, predictions, embed]
  for j in range(12):
    changed = np.asarray(run(tokens.at[0, j].add(1)))
    for a, i in enumerate(TARGETS[0]):
      visible = SEGMENTS[0, j] == SEGMENTS[0, i] and RANKS[0, j] < RANKS[0, i]
      differs = not np.allclose(changed[0, a], base[0, a], rtol=0, atol=1e-6)
      assert differs == visible, (i, j, visible)


def test_memory_equals_running_the_concatenation():
  """Chunk 2 with chunk 1's memory = one run over both chunks whose ranks put all of chunk 1
  before chunk 2 (what the memory means), exactly up to float rounding."""
  model, params = _model_and_params()
  apply = jax.jit(functools.partial(model.apply, {'params': params}))
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, VOCAB, (2, 16))
  segments = np.array([[1] * 11 + [2] * 5, [1] * 3 + [2] * 10 + [0] * 3])
  ranks = rng.integers(0, 3, (2, 16)) * (segments > 0)
  targets = np.array([[1, 4, 6], [0, 2, 5]])  # Per chunk (within-chunk positions).
  _, _, mems = apply(tokens[:, :8], segments[:, :8], ranks[:, :8], targets)
  h2, g2, _ = apply(
    tokens[:, 8:],
    segments[:, 8:],
    ranks[:, 8:],
    targets,
    mems=mems,
    mem_segment_ids=segments[:, :8],
  )
  later = np.concatenate([ranks[:, :8], ranks[:, 8:] + ranks[:, :8].max() + 1], axis=1)
  h, g, _ = apply(tokens, segments, later, targets + 8)
  np.testing.assert_allclose(h2, h[:, 8:], atol=2e-5)
  np.testing.assert_allclose(g2, g, atol=2e-5)
  # The check can fail: without the memory, chunk 2 reads differently.
  h_alone, _, _ = apply(tokens[:, 8:], segments[:, 8:], ranks[:, 8:], targets)
  assert not np.allclose(h_alone[0], h2[0], atol=1e-3)


def test_relative_segment_encoding():
  """All-zero token types equal no types; a type change within a document changes it."""
  model, params = _model_and_params()
  tokens = jnp.asarray(np.arange(12)[None] + 1)
  run = jax.jit(
    lambda types: model.apply({'params': params}, tokens, SEGMENTS, RANKS, TARGETS, types)
  )
  h_none, g_none, _ = run(None)
  h_zero, g_zero, _ = run(jnp.zeros_like(tokens))
  np.testing.assert_allclose(h_zero, h_none, atol=1e-6)
  np.testing.assert_allclose(g_zero, g_none, atol=1e-6)
  h_pair, _, _ = run(jnp.asarray((np.arange(12)[None] >= 4).astype(np.int32)))
  assert not np.allclose(h_pair, h_none, atol=1e-3)


def test_lm_logits_and_dropout():
  model = xlnet.XLNetLM(_cfg())
  params = nn.unbox(random_params(model, *model.init_inputs(12)))
  tokens = jnp.asarray(np.arange(12)[None] + 1)
  args = (tokens, SEGMENTS, RANKS, TARGETS)

  @jax.jit
  def run(params, rng):
    logits, mems = model.apply({'params': params}, *args)
    _, g, _ = xlnet.XLNet(_cfg()).apply({'params': params['xlnet']}, *args)
    dropped, _ = model.apply({'params': params}, *args, deterministic=False, rngs={'dropout': rng})
    return logits, mems, g, dropped

  logits, mems, g, dropped = run(params, jax.random.key(0))
  assert logits.shape == (1, 5, VOCAB) and logits.dtype == jnp.float32
  assert len(mems) == 2 and mems[0].shape == (1, 12, 16)
  table = params['xlnet']['word_embedding']['embedding']
  np.testing.assert_allclose(logits, g @ table.T + params['lm_bias'], rtol=1e-5, atol=1e-5)
  assert np.isfinite(dropped).all() and not np.allclose(dropped, logits)
