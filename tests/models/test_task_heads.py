"""Fine-tuning heads: shapes, a backbone's parameters load as they are, padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np

from models import heads, presets


def _cfg():
  return presets.get_config(
    'bert-base', vocab_size=100, num_layers=2, d_model=32, num_heads=2, mlp_dim=64
  )


def _inputs(rng, batch=3, length=12):
  tokens = jnp.asarray(rng.integers(5, 100, (batch, length)), jnp.int32)
  segment_ids = jnp.ones((batch, length), jnp.int32).at[1, 8:].set(0)
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  token_types = jnp.zeros((batch, length), jnp.int32).at[:, 6:].set(1)
  return tokens, segment_ids, positions, token_types


def test_heads_shapes_and_backbone_compatible_parameters():
  cfg, rng = _cfg(), np.random.default_rng(0)
  inputs = _inputs(rng)
  backbone = heads.Backbone(cfg).init(jax.random.key(0), *inputs)['params']
  for model, shape in (
    (heads.SequenceClassifier(cfg, num_labels=3), (3, 3)),
    (heads.SequenceClassifier(cfg, num_labels=1), (3, 1)),  # STS-B regression.
    (heads.TokenClassifier(cfg, num_labels=9), (3, 12, 9)),
  ):
    params = model.init(jax.random.key(1), *inputs)['params']
    assert model.apply({'params': params}, *inputs).shape == shape
    # The pretrained backbone's encoder (and pooler) drop in without renaming.
    assert jax.tree.structure(params['encoder']) == jax.tree.structure(backbone['encoder'])
    if 'pooler' in params:
      assert jax.tree.structure(params['pooler']) == jax.tree.structure(backbone['pooler'])
    loaded = {**params, 'encoder': backbone['encoder']}
    out = model.apply({'params': loaded}, *inputs)
    assert np.all(np.isfinite(np.asarray(out)))


def test_padding_does_not_change_a_rows_prediction_and_dropout_is_live():
  cfg, rng = _cfg(), np.random.default_rng(1)
  tokens, segment_ids, positions, token_types = _inputs(rng)
  model = heads.SequenceClassifier(cfg, num_labels=2)
  params = model.init(jax.random.key(0), tokens, segment_ids, positions, token_types)
  logits = model.apply(params, tokens, segment_ids, positions, token_types)
  # Row 1's padding (positions 8-11) holds other tokens: same prediction.
  noisy = tokens.at[1, 8:].set(7)
  again = model.apply(params, noisy, segment_ids, positions, token_types)
  np.testing.assert_allclose(again[1], logits[1], atol=1e-5)
  train = model.apply(
    params, tokens, segment_ids, positions, token_types, False, rngs={'dropout': jax.random.key(2)}
  )
  assert not np.allclose(train, logits)
