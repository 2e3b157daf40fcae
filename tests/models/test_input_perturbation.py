"""The token-embedding perturbation (models/input_perturbation.py, Embed in
models/transformer.py): moving a row's embedding by the difference of two table rows is
exactly feeding the other token; the sown embeddings are the table's rows; `locate` finds
the one embedding layer of a classifier and asks which one of an encoder-decoder; and a
model that nobody perturbs neither keeps nor computes anything for it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, input_perturbation, presets

VOCAB, LENGTH = 50, 8


def _classifier(**fields):
  cfg = presets.get_config(
    'bert-tiny', vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, mlp_dim=64,
    max_len=16, **fields,
  )  # fmt: skip
  model = heads.SequenceClassifier(cfg, 3)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, VOCAB, (2, LENGTH)), jnp.int32)
  segment_ids = jnp.ones_like(tokens)
  variables = nn.unbox(model.init(jax.random.key(0), tokens, segment_ids))
  return model, variables, tokens, segment_ids


@pytest.mark.parametrize('layout', ['loop', 'scan'])
def test_a_delta_of_two_table_rows_is_the_other_token(layout):
  model, variables, tokens, segment_ids = _classifier(scan_layers=layout == 'scan')
  assert set(variables) == {'params'}  # init keeps no perturbation and no sown embeddings.
  params = variables['params']
  logits, sown = model.apply({'params': params}, tokens, segment_ids, mutable='intermediates')
  site = input_perturbation.locate(sown['intermediates'])
  assert site.path == ('encoder', 'embed')
  table = params['encoder']['embed']['token']['embedding']  # [vocab, token_dim]
  np.testing.assert_array_equal(site.read(sown['intermediates']), table[tokens])

  swapped = tokens.at[1, 4].set(7)
  delta = jnp.zeros((2, LENGTH, table.shape[1])).at[1, 4].set(table[7] - table[tokens[1, 4]])
  variables = {'params': params, input_perturbation.COLLECTION: site.tree(delta)}
  moved = model.apply(variables, tokens, segment_ids)
  np.testing.assert_allclose(moved, model.apply({'params': params}, swapped, segment_ids),
                             atol=1e-5)  # fmt: skip
  np.testing.assert_array_equal(moved[0], logits[0])  # The other row is untouched.
  # The same through the proxy an objective's loss is handed.
  proxy = input_perturbation.Perturbed(model, site.tree(delta))
  np.testing.assert_array_equal(proxy.apply({'params': params}, tokens, segment_ids), moved)


def test_nothing_is_computed_when_nobody_asks():
  model, variables, tokens, segment_ids = _classifier()
  jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, tokens, segment_ids))(variables))
  zero = {'params': variables['params'], input_perturbation.COLLECTION: input_perturbation.Site(
    ('encoder', 'embed')).tree(jnp.zeros((2, LENGTH, 32)))}  # fmt: skip
  perturbed = str(jax.make_jaxpr(lambda v: model.apply(v, tokens, segment_ids))(zero))
  assert perturbed.count(' add ') == jaxpr.count(' add ') + 1  # The one addition, when asked.


def test_locate_wants_one_embedding_layer():
  cfg = presets.get_config(
    't5-small', vocab_size=VOCAB, num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2,
    mlp_dim=64, head_dim=16,
  )  # fmt: skip
  model = heads.Seq2SeqLM(cfg)
  tokens = jnp.ones((1, LENGTH), jnp.int32)
  inputs = model.init_inputs(LENGTH)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *inputs)['params'])
  _, sown = jax.eval_shape(
    lambda p: model.apply({'params': p}, *inputs, mutable='intermediates'), params
  )
  with pytest.raises(ValueError, match='one embedding layer'):
    input_perturbation.locate(sown['intermediates'])
  assert input_perturbation.locate(sown['intermediates'], 'decoder').path == ('decoder', 'embed')
  with pytest.raises(ValueError, match='no module'):
    input_perturbation.locate({'encoder': {'embedded': (tokens,)}})
