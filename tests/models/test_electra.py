"""Tests of models/electra.py: generator sizing, parameter layout, shared embeddings."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import electra, flops, presets

VOCAB = 50


def _cfg(**kw):
  sizes = dict(num_layers=2, d_model=32, num_heads=4, mlp_dim=64, embed_dim=16)
  return presets.get_config('electra-small', vocab_size=VOCAB, **{**sizes, **kw})


def _model(cfg=None, fraction=0.25):
  cfg = cfg or _cfg()
  return electra.ElectraPretraining(cfg, electra.generator_config(cfg, fraction))


def _inputs(batch=2, length=10, seed=0):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(0, VOCAB, (batch, length)), jnp.int32)
  segment_ids = jnp.ones((batch, length), jnp.int32).at[1, 7:].set(0)
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  return tokens, segment_ids, positions


def _init(model):
  """(boxed, unboxed) params; jitted, as eager Flax is slow."""
  boxed = jax.jit(model.init)(jax.random.key(0), *_inputs())['params']
  return boxed, nn.unbox(boxed)


def _shapes(model):
  """The boxed params' shapes, traced without compiling."""
  return jax.eval_shape(model.init, jax.random.key(0), *_inputs())['params']


@pytest.fixture(scope='module')
def base():
  """The default tiny model (generator 1/4 wide) and its (boxed, unboxed) params."""
  model = _model()
  return (model, *_init(model))


def _apply(model, method='__call__', **kw):
  """Jitted `model.apply(params, *inputs, method=...)`."""
  return jax.jit(lambda p, *inputs: model.apply({'params': p}, *inputs, method=method, **kw))


@pytest.mark.parametrize(
  'name, fraction, generator',
  [
    ('electra-small', 0.25, 'electra-small-generator'),
    ('electra-base', 1 / 3, 'electra-base-generator'),
  ],
)
def test_generator_config_matches_released_generators(name, fraction, generator):
  cfg = electra.generator_config(presets.get_config(name), fraction)
  want = presets.get_config(generator)
  for field in ('num_layers', 'd_model', 'num_heads', 'mlp_dim', 'embed_dim', 'token_dim'):
    assert getattr(cfg, field) == getattr(want, field), field


def test_generator_config_keeps_everything_else():
  cfg = _cfg(num_heads=2)
  gen = electra.generator_config(cfg, 0.5)
  assert (gen.d_model, gen.num_heads, gen.mlp_dim, gen.embed_dim) == (16, 1, 32, None)
  unchanged = dataclasses.replace(gen, d_model=32, num_heads=2, mlp_dim=64, embed_dim=16)
  assert unchanged == cfg
  # A generator as wide as E needs no projection; a wider one projects again.
  assert electra.generator_config(_cfg(embed_dim=None), 1.0).embed_dim is None
  assert electra.generator_config(_cfg(embed_dim=None), 0.5).embed_dim == 32


@pytest.mark.parametrize('fraction', [0.0, -0.25, 1.5, 0.01])
def test_generator_config_rejects_bad_fractions(fraction):
  with pytest.raises(ValueError, match='generator_fraction'):
    electra.generator_config(_cfg(), fraction)


def test_indivisible_heads_are_rejected():
  # 32 x 0.6 -> 19 wide, 4 x 0.6 -> 2 heads: 19 does not split into 2 heads.
  with pytest.raises(ValueError, match='divisible by num_heads'):
    electra.generator_config(_cfg(), 0.6)


def test_parameter_layout_and_one_shared_table(base):
  _, boxed, params = base
  assert set(params) == {'discriminator', 'generator'}
  disc, gen = params['discriminator'], params['generator']
  assert set(disc['encoder']['embed']) == {'token', 'position', 'token_type', 'norm', 'project'}
  assert set(gen['encoder']['embed']) == {'project'}
  assert gen['encoder']['embed']['project']['kernel'].shape == (16, 8)
  assert disc['encoder']['embed']['project']['kernel'].shape == (16, 32)
  assert {'rtd_dense', 'rtd_logit', 'encoder'} == set(disc)
  assert {'mlm_transform', 'mlm_norm', 'mlm_bias', 'encoder'} == set(gen)
  assert disc['rtd_logit']['kernel'].shape == (32, 1)
  # A generator as wide as E (16 = 32 x 0.5) has no projection, hence no embed params.
  params_half = _shapes(_model(fraction=0.5))
  assert 'embed' not in params_half['generator']['encoder']
  # Exactly one token table and one position table in the whole tree.
  shapes = [leaf.shape for leaf in jax.tree.leaves(params)]
  assert shapes.count((VOCAB, 16)) == 1
  assert shapes.count((512, 16)) == 1
  # Every parameter keeps its logical axis names (sharding), the head's included.
  names = boxed['discriminator']['rtd_dense']['kernel'].names
  assert names == ('embed', 'mlp')
  assert boxed['discriminator']['encoder']['embed']['token']['embedding'].names == (
    'vocab',
    'factor',
  )
  assert all(
    isinstance(leaf, nn.LogicallyPartitioned)
    for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  )


def test_generator_reads_the_discriminators_embeddings(base):
  model, _, params = base
  inputs = _inputs()
  generate, discriminate = _apply(model, 'generate'), _apply(model, 'discriminate')
  base_gen, base_disc = generate(params, *inputs), discriminate(params, *inputs)
  assert base_gen.shape == (2, 10, VOCAB) and base_disc.shape == (2, 10)
  embed = params['discriminator']['encoder']['embed']
  for table in ('token', 'position', 'token_type'):
    bumped = jax.tree.map(lambda x: x, params)  # New containers: params stay as they are.
    leaf = embed[table]['embedding']
    # A random change: a constant shift would vanish in the embedding LayerNorm.
    noise = jax.random.normal(jax.random.key(1), leaf.shape)
    bumped['discriminator']['encoder']['embed'][table]['embedding'] = leaf + noise
    assert not np.allclose(generate(bumped, *inputs), base_gen, atol=1e-4), table
  bumped = jax.tree.map(lambda x: x, params)
  # Scaling would vanish in the generator's next LayerNorm (zero biases at init): shift.
  noise = jax.random.normal(jax.random.key(2), embed['norm']['bias'].shape)
  bumped['discriminator']['encoder']['embed']['norm']['bias'] = embed['norm']['bias'] + noise
  assert not np.allclose(generate(bumped, *inputs), base_gen, atol=1e-4)
  # The generator's own layers do not touch the discriminator.
  bumped = jax.tree.map(lambda x: x, params)
  bumped['generator']['encoder'] = jax.tree.map(lambda x: x + 0.5, params['generator']['encoder'])
  np.testing.assert_array_equal(discriminate(bumped, *inputs), base_disc)
  assert not np.allclose(generate(bumped, *inputs), base_gen, atol=1e-4)


def test_both_networks_train_the_shared_tables(base):
  model, _, params = base
  inputs = _inputs()

  @jax.jit
  def grads(p):
    energy = lambda p, method: jnp.sum(model.apply({'params': p}, *inputs, method=method) ** 2)  # noqa: E731
    return jax.grad(energy)(p, 'generate'), jax.grad(energy)(p, 'discriminate')

  for method, g in zip(('generate', 'discriminate'), grads(params), strict=True):
    embed = g['discriminator']['encoder']['embed']
    for table in ('token', 'position', 'token_type'):
      assert np.abs(embed[table]['embedding']).sum() > 0, (method, table)


@pytest.mark.default_emitters
def test_discriminator_runs_alone_from_its_subtree(base):
  model, _, params = base
  inputs = _inputs()
  discriminator = electra.Discriminator(model.cfg)
  alone = jax.jit(discriminator.apply)({'params': params['discriminator']}, *inputs)
  np.testing.assert_allclose(alone, _apply(model, 'discriminate')(params, *inputs), rtol=1e-6)
  gen, disc = _apply(model)(params, *inputs)
  np.testing.assert_allclose(disc, alone, rtol=1e-6)
  np.testing.assert_allclose(gen, _apply(model, 'generate')(params, *inputs), rtol=1e-6)


def test_scanned_layers_same_layout_and_numerics(base):
  loop, _, loop_params = base
  scan = _model(_cfg(scan_layers=True))

  def stack(encoder):
    blocks = [encoder.pop(f'block_{i}') for i in range(2)]
    return {**encoder, 'blocks': jax.tree.map(lambda *x: jnp.stack(x), *blocks)}

  converted = jax.tree.map(lambda x: x, loop_params)
  for part in ('discriminator', 'generator'):
    converted[part]['encoder'] = stack(dict(converted[part]['encoder']))
  shape = lambda x: x.shape  # noqa: E731
  assert jax.tree.map(shape, converted) == jax.tree.map(shape, nn.unbox(_shapes(scan)))
  inputs = _inputs()
  pairs = zip(_apply(scan)(converted, *inputs), _apply(loop)(loop_params, *inputs), strict=True)
  for got, want in pairs:
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_dropout_is_used_when_training(base):
  model, _, params = base
  inputs = _inputs()

  @jax.jit
  def run(seed):
    rngs = {'dropout': jax.random.key(seed)}
    return model.apply({'params': params}, *inputs, deterministic=False, rngs=rngs)

  (gen_1, disc_1), (gen_1b, _), (gen_2, disc_2) = run(1), run(1), run(2)
  np.testing.assert_array_equal(gen_1, gen_1b)
  assert not np.allclose(gen_1, gen_2) and not np.allclose(disc_1, disc_2)


def test_train_flops_count_both_networks():
  disc = presets.get_config('electra-small', vocab_size=1000)
  gen = electra.generator_config(disc, 0.25)
  model = electra.ElectraPretraining(disc, gen)
  d, layers, e = disc.d_model, disc.num_layers, disc.embed_dim
  assert (d, e, gen.d_model, gen.embed_dim) == (256, 128, 64, 128)
  # Discriminator: 12 layers of 4 d^2 attention + 2 d x 4d MLP matmuls, the E x d embedding
  # projection, its d x d + d head; generator: the same at its width, its own projection
  # of the shared E-wide embeddings, its MLM transform (g x E) and the vocabulary (E x V).
  g = gen.d_model
  expected = 6 * (layers * (4 * d * d + 8 * d * d) + e * d + d * d + d)
  expected += 6 * (layers * (4 * g * g + 8 * g * g) + e * g + g * e + e * 1000)
  expected += 12 * layers * 128 * (d + g)  # Attention scores of both.
  assert flops.model_flops_per_token(model, disc, 128) == expected
