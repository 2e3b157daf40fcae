"""The attention distributions a forward pass can return ('attention_weights', sown by
models/transformer.py's Attention): rows that sum to 1 over the keys a query may see, equal
to a softmax written out here from the sown queries and keys, the very probabilities the
XLA reference applies, in every layer layout; and nothing when nobody asks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import attention, heads, intermediates, presets

VOCAB, LENGTH, BATCH = 50, 8, 2


def _encoder_inputs():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(3, VOCAB, (BATCH, LENGTH)), jnp.int32)
  segment_ids = jnp.asarray([[1] * 5 + [2] * 3, [1] * 6 + [0] * 2], jnp.int32)  # Packed; padded.
  positions = jnp.asarray([[0, 1, 2, 3, 4, 0, 1, 2], list(range(LENGTH))], jnp.int32)
  return tokens, segment_ids, positions


def _manual_probs(q, k, segment_ids, causal=False, scale=None):
  """softmax(q k / sqrt(d)) over the keys of the query's own segment, in NumPy."""
  q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) * scale
  s = np.asarray(segment_ids)
  allowed = (s[:, :, None] == s[:, None, :]) & (s[:, None, :] > 0)
  if causal:
    allowed &= np.tril(np.ones((LENGTH, LENGTH), bool))[None]
  logits = np.where(allowed[:, None], logits, -np.inf)
  with np.errstate(invalid='ignore'):
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True), s > 0  # Padding rows: NaN, not compared.


LAYOUTS = {
  'bert-loop': ('bert-tiny', {}),
  'bert-scan': ('bert-tiny', {'scan_layers': True}),
  'albert-shared': ('albert-base', {'embed_dim': 16}),
  'gpt2-causal': ('gpt2-small', {}),
}


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_rows_sum_to_one_and_equal_a_softmax_of_the_sown_queries_and_keys(name):
  preset, fields = LAYOUTS[name]
  cfg = presets.get_config(
    preset, vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, mlp_dim=64, max_len=16,
    init_std=0.2, **fields,
  )  # fmt: skip
  model = heads.Backbone(cfg)
  tokens, segment_ids, positions = _encoder_inputs()
  params = model.init(jax.random.key(0), tokens, segment_ids, positions)['params']
  plain = model.apply({'params': params}, tokens, segment_ids, positions)
  (hidden, _), sown = model.apply(
    {'params': params}, tokens, segment_ids, positions,
    mutable=['attention_weights', 'intermediates'],
  )  # fmt: skip
  # Keeping the weights changes nothing the model computes.
  np.testing.assert_array_equal(np.asarray(hidden), np.asarray(plain[0]))
  weights = intermediates.attention_weights(sown['attention_weights'])
  layers = intermediates.stack(sown['intermediates']).layers
  assert len(weights) == len(layers) == 2
  for probs, layer in zip(weights, layers, strict=True):
    assert probs.shape == (BATCH, 4, LENGTH, LENGTH) and probs.dtype == jnp.float32
    manual, real = _manual_probs(layer.query, layer.key, segment_ids, causal=cfg.causal)
    probs = np.asarray(probs)
    np.testing.assert_allclose(
      probs.sum(-1)[real.nonzero()[0], :, real.nonzero()[1]], 1.0, atol=1e-5
    )
    np.testing.assert_allclose(
      probs.transpose(0, 2, 1, 3)[real], manual.transpose(0, 2, 1, 3)[real], atol=1e-5
    )
    # No weight across a packed segment boundary or on padding.
    assert np.all(probs[0, :, :5, 5:] == 0) and np.all(probs[1, :, :6, 6:] == 0)
  if cfg.causal:
    assert np.all(np.triu(np.asarray(weights[0])[0, 0], 1) == 0)


def test_the_reference_applies_the_given_probabilities():
  """xla_attention with `probs` uses them: its output is probs @ v, whatever they are."""
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=(BATCH, LENGTH, 2, 4)), jnp.float32) for _ in range(3))
  _, segment_ids, _ = _encoder_inputs()
  mask = attention.SegmentMask.self_attend(segment_ids)
  own = attention.attention_probabilities(q, k, mask, scale=0.5)
  np.testing.assert_array_equal(
    np.asarray(attention.xla_attention(q, k, v, mask, scale=0.5, probs=own)),
    np.asarray(attention.xla_attention(q, k, v, mask, scale=0.5)),
  )
  uniform = jnp.full_like(own, 1.0 / LENGTH)
  out = attention.xla_attention(q, k, v, mask, scale=0.5, probs=uniform)
  expected = np.broadcast_to(np.asarray(v).mean(1, keepdims=True), v.shape).copy()
  expected[1, 6:] = 0  # Padding queries see no key: zeros.
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-6)


def test_encoder_decoder_keeps_self_and_cross_attention_with_t5_bias():
  cfg = presets.get_config(
    't5-small', vocab_size=VOCAB, num_layers=1, num_decoder_layers=1, d_model=32, num_heads=4,
    mlp_dim=64, head_dim=8,
  )  # fmt: skip
  model = heads.Seq2SeqLM(cfg)
  tokens, segment_ids, positions = _encoder_inputs()
  inputs = (tokens, segment_ids, positions) * 2
  params = model.init(jax.random.key(0), *inputs)['params']
  _, sown = model.apply({'params': params}, *inputs, mutable=['attention_weights'])
  collection = sown['attention_weights']
  encoder = intermediates.attention_weights(collection, 'encoder')[0]
  decoder = intermediates.attention_weights(collection, 'decoder')[0]
  cross = intermediates.attention_weights(collection, 'decoder', 'cross_attention')[0]
  for probs in (encoder, decoder, cross):
    assert probs.shape == (BATCH, 4, LENGTH, LENGTH)
    np.testing.assert_allclose(np.asarray(probs)[0].sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(np.asarray(decoder)[0, 0], 1) == 0)  # The decoder is causal.
  assert np.all(np.asarray(cross)[0, :, :5, 5:] == 0)  # Segment 1 reads encoder segment 1.
  with pytest.raises(ValueError, match="No attention weights of 'missing'"):
    intermediates.attention_weights(collection, 'missing')


def test_nothing_is_computed_or_returned_unless_asked():
  cfg = presets.get_config('bert-tiny', vocab_size=VOCAB, num_layers=1, d_model=32, max_len=16)
  model = heads.Backbone(cfg)
  tokens, segment_ids, positions = _encoder_inputs()
  params = nn.unbox(model.init(jax.random.key(0), tokens, segment_ids, positions)['params'])

  def exps(**kw):
    jaxpr = jax.make_jaxpr(lambda p: model.apply({'params': p}, tokens, segment_ids, **kw))(params)
    return str(jaxpr).count(' exp ')

  _, sown = model.apply({'params': params}, tokens, segment_ids, mutable=['intermediates'])
  assert 'attention_weights' not in sown
  # The softmax runs once per layer either way: the kept probabilities are the ones applied.
  assert exps() == exps(mutable=['attention_weights']) >= 1
