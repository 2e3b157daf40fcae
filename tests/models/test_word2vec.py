"""Tests of models/word2vec.py: sizes, init, and the pair scores by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import presets, word2vec

# Vocab 5, width 2: every score below can be checked by eye.
INPUT = np.array([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4], [0.5, 0.5], [1.0, -1.0]], np.float32)
OUTPUT = np.array([[0.2, -0.3], [0.1, 0.1], [-0.4, 0.2], [0.3, 0.0], [0.0, 2.0]], np.float32)
PARAMS = {'input': jnp.asarray(INPUT), 'output': jnp.asarray(OUTPUT)}
INPUTS = np.array([[1, 2, 3]])  # [batch=1, length=3] centers.
CONTEXTS = np.array([[[2, 0], [1, 3], [2, 4]]])  # [1, 3, slots=2]
CONTEXT_WEIGHTS = np.array([[[1, 0], [1, 1], [1, 1]]], np.float32)
# [1, 3, 2, K=2]; noise word 2 of the pair (center 3, context 2) is that context itself,
# and so is CBOW's noise word 2 for center 2: the loss skips both.
NEGATIVES = np.array([[[[4, 0], [3, 3]], [[0, 2], [1, 4]], [[2, 1], [0, 0]]]])


@pytest.mark.parametrize('name', ['word2vec-skipgram', 'word2vec-cbow'])
def test_param_count_is_two_tables(name):
  cfg = presets.get_config(name)
  assert presets.count_params(cfg) == 2 * 3_000_000 * 300 == 1_800_000_000
  small = cfg.replace(vocab_size=1000, d_model=64)
  assert small.count_params() == 2 * 1000 * 64


def test_flops_per_token_by_hand():
  cfg = word2vec.Word2VecConfig(vocab_size=100, d_model=300)
  assert cfg.train_flops_per_token(128) == 6 * 300 * 6 * 6  # 6 pairs x (1 + 5 noise).
  assert cfg.replace(mode='cbow').train_flops_per_token(128) == 6 * 300 * 6
  with pytest.raises(ValueError, match="mode='glove'"):
    cfg.replace(mode='glove')


def test_init_follows_word2vec_c():
  cfg = word2vec.Word2VecConfig(vocab_size=50, d_model=8)
  model = word2vec.Word2Vec(cfg)
  boxed = model.init(jax.random.key(0), *model.init_inputs(4))['params']
  for leaf in boxed.values():
    assert isinstance(leaf, nn.LogicallyPartitioned) and leaf.names == ('vocab', 'embed')
  params = nn.unbox(boxed)
  assert params['input'].shape == params['output'].shape == (50, 8)
  assert np.abs(params['input']).max() <= 0.5 / 8 and np.abs(params['input']).std() > 0.01
  np.testing.assert_array_equal(params['output'], 0.0)  # Output vectors start at zero.
  vectors = model.apply({'params': params}, method='vectors')
  np.testing.assert_array_equal(vectors, params['input'])


def _scores(mode):
  model = word2vec.Word2Vec(word2vec.Word2VecConfig(vocab_size=5, d_model=2, mode=mode))
  apply = jax.jit(lambda *a: model.apply({'params': PARAMS}, *a))
  return apply(INPUTS, CONTEXTS, CONTEXT_WEIGHTS, NEGATIVES)


def test_skipgram_scores_are_center_dot_output():
  positive, negative = _scores('skipgram')
  assert positive.shape == (1, 3, 2) and negative.shape == (1, 3, 2, 2)
  # Center 1 = (0.3, -0.1) against context 2's output (-0.4, 0.2): -0.12 - 0.02.
  np.testing.assert_allclose(positive[0, 0, 0], -0.14, rtol=1e-6)
  # Center 2 = (-0.2, 0.4) against noise word 4's output (0, 2): 0.8.
  np.testing.assert_allclose(negative[0, 1, 1, 1], 0.8, rtol=1e-6)
  expected = np.einsum('ld,lsd->ls', INPUT[INPUTS[0]], OUTPUT[CONTEXTS[0]])
  np.testing.assert_allclose(positive[0], expected, rtol=1e-6)
  expected = np.einsum('ld,lskd->lsk', INPUT[INPUTS[0]], OUTPUT[NEGATIVES[0]])
  np.testing.assert_allclose(negative[0], expected, rtol=1e-6)


def test_cbow_scores_use_the_mean_of_the_weighted_context():
  positive, negative = _scores('cbow')
  assert positive.shape == (1, 3) and negative.shape == (1, 3, 2)
  # Position 0: the context is word 2 alone (slot 1 has weight 0) -> (-0.2, 0.4);
  # it predicts center 1, output (0.1, 0.1): 0.02.
  np.testing.assert_allclose(positive[0, 0], 0.02, rtol=1e-5)
  # Position 1: mean of words 1 and 3 = (0.4, 0.2); predicts center 2 (-0.4, 0.2): -0.12.
  np.testing.assert_allclose(positive[0, 1], -0.12, rtol=1e-5)
  # ... against slot 0's noise words 0 (0.2, -0.3) and 2: 0.02 and -0.12.
  np.testing.assert_allclose(negative[0, 1], [0.02, -0.12], rtol=1e-5)
