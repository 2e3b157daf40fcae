"""Tests of models/elmo.py: sizes, packing isolation, directions, scalar mix, char table."""

import functools
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import elmo, presets

VOCAB, LENGTH, CHARS = 40, 12, 9  # One input shape for every test: one XLA compile.


def _by_hand(layers, d, cells, highway, filters, char_embed=16, char_vocab=262) -> int:
  """The biLM's parameters, written out: CNN, highway, projection, 2 x layers LSTMs."""
  width = sum(n for _, n in filters)
  cnn = char_vocab * char_embed + sum(w * char_embed * n + n for w, n in filters)
  highways = highway * 2 * (width * width + width)  # Transform and gate, with biases.
  projection = width * d + d
  lstm = (d + d) * 4 * cells + 4 * cells + cells * d  # Input, recurrent, bias, projection.
  return cnn + highways + projection + 2 * layers * lstm


TINY_FILTERS = ((1, 16), (2, 16), (3, 32), (4, 64))
COUNTS = {
  'elmo': _by_hand(2, 512, 4096, 2, elmo._FILTERS),
  'elmo-medium': _by_hand(2, 256, 2048, 1, elmo._FILTERS),
  'elmo-small': _by_hand(2, 128, 1024, 1, elmo._FILTERS),
  'elmo-tiny': _by_hand(2, 64, 256, 1, TINY_FILTERS),
}
PUBLISHED = {'elmo': 93.6e6, 'elmo-medium': 28.0e6, 'elmo-small': 13.6e6}  # AllenNLP's table.


@pytest.mark.parametrize('name', COUNTS)
def test_param_counts_match_the_hand_count_and_the_published_ones(name):
  count = presets.count_params(presets.get_config(name))
  assert count == COUNTS[name]
  if name in PUBLISHED:  # Published to three significant figures.
    assert abs(count - PUBLISHED[name]) < 0.05e6, count
  assert COUNTS['elmo'] == 93_600_864


def test_flops_per_token_by_hand():
  cfg = elmo.ElmoConfig(**dict(elmo.PRESETS['elmo-tiny'], vocab_size=VOCAB))
  conv = 50 * 1 * 16 * 16 + 49 * 2 * 16 * 16 + 48 * 3 * 16 * 32 + 47 * 4 * 16 * 64
  per_direction_layer = 128 * 1024 + 256 * 64
  expected = 6 * (conv + 2 * 128 * 128 + 128 * 64 + 4 * per_direction_layer + 2 * 64 * VOCAB)
  assert cfg.train_flops_per_token(128) == expected


def _cfg(**overrides):
  return elmo.ElmoConfig(**dict(elmo.PRESETS['elmo-tiny'], vocab_size=VOCAB, **overrides))


def random_params(model, *inputs, seed=0):
  """Parameters of `model` at random (scale 1 / sqrt(fan-in)), boxed with their axis names.

  Filled from the abstract init (`jax.eval_shape`): no init compile, which on a
  CPU costs more than the tests themselves.
  """
  boxed = jax.eval_shape(model.init, jax.random.key(0), *inputs)['params']
  rng = np.random.default_rng(seed)

  def fill(x):
    scale = 1.0 / np.sqrt(x.shape[-2]) if len(x.shape) >= 2 else 0.1
    return jnp.asarray(rng.normal(size=x.shape) * scale, x.dtype)

  return jax.tree.map(fill, boxed)


@functools.cache
def _model_and_params():
  model = elmo.ElmoLM(_cfg())
  return model, random_params(model, *model.init_inputs(LENGTH))


@functools.cache
def _apply_fn():
  """(forward logits, backward logits, layer representations), jitted once."""
  model, _ = _model_and_params()

  def apply(params, chars, segment_ids):
    variables = {'params': params}
    layers = model.apply(variables, chars, segment_ids, method='layer_representations')
    return *model.apply(variables, chars, segment_ids), layers

  return jax.jit(apply)


# A random character row for every token id (the table a tokenizer would give).
CHAR_ROWS = np.random.default_rng(0).integers(1, elmo.CHAR_VOCAB_SIZE, (VOCAB, CHARS))


def _run(rows, segments):
  """(forward, backward) logits and the layers for [batch, LENGTH] ids and segment ids."""
  _, params = _model_and_params()
  rows, segments = np.asarray(rows), np.asarray(segments)
  n = len(rows)  # Always 3 rows (the same input shape); extra rows are padding.
  rows, segments = (np.pad(a, ((0, 3 - n), (0, 0))) for a in (rows, segments))
  chars = jnp.asarray(CHAR_ROWS[rows], jnp.int32)
  fw, bw, layers = _apply_fn()(nn.unbox(params), chars, jnp.asarray(segments, jnp.int32))
  return np.asarray(fw)[:n], np.asarray(bw)[:n], np.asarray(layers)[:, :n]


def _row(*documents):
  """A packed row of `documents` (lists of ids), then padding, and its segment ids."""
  tokens = np.zeros(LENGTH, np.int64)
  segments = np.zeros(LENGTH, np.int64)
  start = 0
  for number, doc in enumerate(documents, 1):
    tokens[start : start + len(doc)] = doc
    segments[start : start + len(doc)] = number
    start += len(doc)
  return tokens, segments


def test_shapes_and_layer_representations():
  tokens, segments = _row([3, 4, 5, 6], [7, 8, 9])
  forward, backward, layers = _run([tokens, tokens], [segments, segments])
  assert forward.shape == backward.shape == (2, LENGTH, VOCAB)
  assert layers.shape == (3, 2, LENGTH, 2 * 64)
  # Layer 0 is the context-free token vector, once per direction.
  np.testing.assert_array_equal(layers[0, ..., :64], layers[0, ..., 64:])
  # The top layer holds the states the softmax reads: [forward, backward].
  _, params = _model_and_params()
  softmax = nn.unbox(params)['softmax']
  for states, logits in ((layers[-1, ..., :64], forward), (layers[-1, ..., 64:], backward)):
    expected = states @ softmax['kernel'] + softmax['bias']
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


A, B, C = [5, 6, 7, 8, 9], [10, 11, 12, 13], [20, 21, 22, 23]


def test_a_packed_document_is_seen_as_if_alone():
  packed, packed_segments = _row(A, B)
  alone, alone_segments = _row(B)
  other, other_segments = _row(A, C)
  fw, bw, _ = _run([packed, alone, other], [packed_segments, alone_segments, other_segments])
  b = slice(len(A), len(A) + len(B))
  np.testing.assert_allclose(fw[0, b], fw[1, : len(B)], atol=1e-5)  # B after A == B alone.
  np.testing.assert_allclose(bw[0, b], bw[1, : len(B)], atol=1e-5)
  a = slice(0, len(A))  # A's backward LM does not read the document after it.
  np.testing.assert_allclose(bw[0, a], bw[2, a], atol=1e-5)
  np.testing.assert_allclose(fw[0, a], fw[2, a], atol=1e-5)
  assert not np.allclose(fw[0, b], fw[2, b], atol=1e-3)  # The test can fail: B vs C differ.


def test_forward_never_reads_ahead_and_backward_never_reads_behind():
  tokens, segments = _row(A + B)
  changed = tokens.copy()
  k = 4
  changed[k] = 30
  fw, bw, _ = _run([tokens, changed], [segments, segments])
  np.testing.assert_allclose(fw[0, :k], fw[1, :k], atol=1e-5)  # No future leak.
  np.testing.assert_allclose(bw[0, k + 1 :], bw[1, k + 1 :], atol=1e-5)  # No past leak.
  # ... while the other side does see the change.
  assert not np.allclose(fw[0, k:9], fw[1, k:9], atol=1e-4)
  assert not np.allclose(bw[0, : k + 1], bw[1, : k + 1], atol=1e-4)


def test_highway_starts_close_to_the_identity():
  highway = elmo.Highway(_cfg())
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 128)), jnp.float32)
  params = nn.unbox(highway.init(jax.random.key(0), x)['params'])
  np.testing.assert_array_equal(params['gate']['bias'], -2.0)  # Gates nearly closed.
  y = highway.apply({'params': params}, x)
  assert np.abs(y - x).mean() < 0.5 * np.abs(x).mean()


def test_every_param_has_logical_axis_names():
  _, params = _model_and_params()  # Boxed, from the abstract init.
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), type(leaf)
    assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)


def test_scalar_mix_by_hand():
  layers = jnp.asarray(np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4))
  mix = elmo.ScalarMix(3)
  variables = mix.init(jax.random.key(0), layers)
  params = nn.unbox(variables['params'])
  np.testing.assert_array_equal(params['scalar_weights'], np.zeros(3))
  assert float(params['gamma']) == 1.0
  # Initially an even average of the layers.
  np.testing.assert_allclose(mix.apply(variables, layers), layers.mean(0), rtol=1e-6)
  params = {'scalar_weights': jnp.array([0.0, np.log(2.0), np.log(5.0)]), 'gamma': 2.0}
  # softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8].
  expected = 2.0 * (layers[0] / 8 + 2 * layers[1] / 8 + 5 * layers[2] / 8)
  np.testing.assert_allclose(mix.apply({'params': params}, layers), expected, rtol=1e-6)
  with pytest.raises(ValueError, match='ScalarMix of 3 layers got 2'):
    mix.apply({'params': params}, layers[:2])


def _tokenizer(pieces):
  return SimpleNamespace(
    vocab_size=len(pieces), pad_id=0, bos_id=1, eos_id=2, id_to_piece=lambda i: pieces[i]
  )


def test_char_table():
  pieces = ['<pad>', '<s>', '</s>', '▁the', 'é', 'x' * 60]
  table = elmo.char_table(_tokenizer(pieces))
  bow, eow, pad = elmo.BEGIN_WORD, elmo.END_WORD, elmo.CHAR_PAD
  assert table.shape == (6, elmo.MAX_CHARS) and table.dtype == np.int32
  np.testing.assert_array_equal(table[0], 0)  # The padding token.
  np.testing.assert_array_equal(table[1, :4], [bow, elmo.BOS_CHAR, eow, pad])
  np.testing.assert_array_equal(table[2, :4], [bow, elmo.EOS_CHAR, eow, pad])
  # '▁' reads as a space (byte 32 -> id 33); bytes are shifted by one.
  np.testing.assert_array_equal(table[3, :7], [bow, 33, ord('t') + 1, 105, 102, eow, pad])
  np.testing.assert_array_equal(table[4, :5], [bow, 0xC3 + 1, 0xA9 + 1, eow, pad])
  # Too long: truncated to max_chars - 2 bytes between the markers.
  assert table[5, 0] == bow and table[5, -1] == eow and (table[5, 1:-1] == ord('x') + 1).all()
  # The table is only as wide as the longest piece needs.
  assert elmo.char_table(_tokenizer(pieces[:5])).shape == (5, 6)


def test_lstm_step_matches_the_equations():
  cfg = _cfg(d_model=3, lstm_dim=2, cell_clip=0.5, proj_clip=0.3)
  rng = np.random.default_rng(1)
  params = {
    'recurrent': rng.normal(size=(3, 8)).astype(np.float32),
    'projection': rng.normal(size=(2, 3)).astype(np.float32),
  }
  cell, state = rng.normal(size=(2, 2)), rng.normal(size=(2, 3)) * 0.2
  input_gates = rng.normal(size=(2, 8))
  reset = np.array([False, True])  # Row 1 starts a segment: its carry is zeroed first.
  carry = (jnp.asarray(cell, jnp.float32), jnp.asarray(state, jnp.float32))
  inputs = (jnp.asarray(input_gates, jnp.float32), jnp.asarray(reset))
  (new_cell, new_state), out = elmo.LstmStep(cfg).apply({'params': params}, carry, inputs)

  sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  cell, state = np.where(reset[:, None], 0, cell), np.where(reset[:, None], 0, state)
  gates = (input_gates + state @ params['recurrent']).reshape(2, 2, 4)  # [batch, cells, 4]
  i, j, f, o = (gates[..., k] for k in range(4))
  expected_cell = np.clip(sigmoid(f + 1) * cell + sigmoid(i) * np.tanh(j), -0.5, 0.5)
  expected_state = np.clip((sigmoid(o) * np.tanh(expected_cell)) @ params['projection'], -0.3, 0.3)
  np.testing.assert_allclose(new_cell, expected_cell, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_state, expected_state, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out, new_state)
  assert (np.abs(expected_state) == 0.3).any() and (np.abs(expected_cell) == 0.5).any()
