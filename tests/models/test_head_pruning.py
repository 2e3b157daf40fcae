"""Structured head pruning: the heads chosen by hand-computed normalized importance, and a
pruned model that computes exactly what the full model computes with those heads masked."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import head_pruning, heads, presets

VOCAB, LENGTH, BATCH, HEADS = 100, 16, 3, 4


@functools.cache
def _setup():
  """A bert-tiny-like tagger with 4 heads (kv 8) per layer and its inputs; weights 10x
  BERT's init scale, so that every head weighs in the output."""
  cfg = presets.get_config(
    'bert-tiny', vocab_size=VOCAB, d_model=32, num_heads=HEADS, mlp_dim=64, max_len=LENGTH,
    init_std=0.2,
  )  # fmt: skip
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(5, VOCAB, (BATCH, LENGTH)), jnp.int32)
  segment_ids = jnp.ones((BATCH, LENGTH), jnp.int32).at[1, 10:].set(0)
  positions = jnp.broadcast_to(jnp.arange(LENGTH), (BATCH, LENGTH))
  token_types = jnp.zeros((BATCH, LENGTH), jnp.int32).at[:, 8:].set(1)
  inputs = (tokens, segment_ids, positions, token_types)
  params = heads.TokenClassifier(cfg, num_labels=5).init(jax.random.key(0), *inputs)['params']
  return cfg, jax.device_get(nn.unbox(params)), inputs


def _apply(cfg, params, inputs, head_mask=None):
  """Logits [batch, length, 5]; `head_mask` {layer: [heads] multipliers}, if given."""
  variables = {'params': params}
  if head_mask is not None:
    variables['head_mask'] = {
      'encoder': {f'block_{i}': {'attention': {'mask': jnp.asarray(m, jnp.float32)}}
                  for i, m in head_mask.items()}
    }  # fmt: skip
  return np.asarray(heads.TokenClassifier(cfg, num_labels=5).apply(variables, *inputs))


def test_removed_heads_equal_masked_heads_including_a_layer_left_without_heads():
  cfg, params, inputs = _setup()
  pruned, pruned_cfg = head_pruning.remove_heads(params, cfg, {0: [1, 3], 1: [0, 1, 2, 3]})
  assert pruned_cfg.layer_heads == (2, 0) and cfg.layer_heads is None
  attention = pruned['encoder']['block_0']['attention']
  assert attention['query']['kernel'].shape == (32, 2, 8)
  assert attention['value']['bias'].shape == (2, 8)
  assert attention['out']['kernel'].shape == (2, 8, 32)
  assert attention['out']['bias'].shape == (32,)
  full = params['encoder']['block_0']['attention']
  # The kept heads are heads 0 and 2, unchanged.
  np.testing.assert_array_equal(attention['key']['kernel'], full['key']['kernel'][:, [0, 2]])
  np.testing.assert_array_equal(attention['out']['kernel'], full['out']['kernel'][[0, 2]])
  assert pruned['encoder']['block_1']['attention']['query']['kernel'].shape == (32, 0, 8)
  masked = _apply(cfg, params, inputs, {0: [1, 0, 1, 0], 1: [0, 0, 0, 0]})
  np.testing.assert_allclose(_apply(pruned_cfg, pruned, inputs), masked, atol=2e-5, rtol=1e-5)
  # The mask does change the output (the comparison above could fail).
  assert np.abs(masked - _apply(cfg, params, inputs)).max() > 0.1
  # Everything outside the attention projections is the same arrays.
  assert pruned['classifier']['kernel'] is params['classifier']['kernel']


def test_a_second_pruning_numbers_heads_as_the_layer_has_them_now():
  cfg, params, inputs = _setup()
  once, once_cfg = head_pruning.remove_heads(params, cfg, {0: [1], 1: [2]})
  assert once_cfg.layer_heads == (3, 3)
  # Layer 0 has original heads [0, 2, 3]: its head 0 is original 0; layer 1 has
  # [0, 1, 3]: its head 2 is original 3.
  twice, twice_cfg = head_pruning.remove_heads(once, once_cfg, {0: [0], 1: [2]})
  assert twice_cfg.layer_heads == (2, 2)
  masked = _apply(cfg, params, inputs, {0: [0, 0, 1, 1], 1: [1, 1, 0, 0]})
  np.testing.assert_allclose(_apply(twice_cfg, twice, inputs), masked, atol=2e-5, rtol=1e-5)


def test_bad_prunings_name_the_value():
  cfg, params, _ = _setup()
  with pytest.raises(ValueError, match=r'prune\[0\]=\[4\]: .* in 0\.\.3'):
    head_pruning.remove_heads(params, cfg, {0: [4]})
  with pytest.raises(ValueError, match=r'prune\[1\]=\[2, 2\]: heads must be distinct'):
    head_pruning.remove_heads(params, cfg, {1: [2, 2]})
  with pytest.raises(ValueError, match=r'prune has layer 2; layers are 0\.\.1'):
    head_pruning.remove_heads(params, cfg, {2: [0]})
  once, once_cfg = head_pruning.remove_heads(params, cfg, {0: [0]})
  wrong = r'bias has shape \(3, 8\): 3 heads on axis 0, but cfg gives layer 0 4 heads'
  with pytest.raises(ValueError, match=wrong):
    head_pruning.remove_heads(once, cfg, {0: [0]})  # The config of the unpruned model.
  with pytest.raises(ValueError, match=r'prune\[0\]=\[3\]: .*0\.\.2 \(layer 0 has 3 heads now\)'):
    head_pruning.remove_heads(once, once_cfg, {0: [3]})


# Layer 0's l2 norm is sqrt(26.25) = 5.1235: normalized 0.5855, 0.7807, 0.0976, 0.1952.
# Layer 1's is sqrt(0.1) = 0.3162: normalized 0.3162, 0.6325, 0.6325, 0.3162. Unnormalized,
# layer 1's heads would all go first.
IMPORTANCE = np.array([[3.0, 4.0, 0.5, 1.0], [0.1, 0.2, 0.2, 0.1]])


@pytest.mark.parametrize(
  'fraction, minimum, expected',
  [
    (0.0, 0, {}),
    (0.25, 0, {0: [2, 3]}),  # round(0.25 x 8) = 2.
    (0.5, 0, {0: [2, 3], 1: [0, 3]}),
    (0.625, 0, {0: [0, 2, 3], 1: [0, 3]}),
    (1.0, 0, {0: [0, 2, 3], 1: [0, 1, 2, 3]}),  # 7 of 8: the model keeps one head.
    (1.0, 1, {0: [0, 2, 3], 1: [0, 1, 3]}),  # A tie (1, 1) / (1, 2) goes to the lower index.
  ],
)
def test_choose_heads_by_hand(fraction, minimum, expected):
  assert head_pruning.choose_heads(IMPORTANCE, fraction, min_heads_per_layer=minimum) == expected


def test_choose_heads_skips_heads_removed_before():
  # Layer 0 has 2 heads left (NaN after them): normalized 0.447, 0.894; layer 1: 0.5 each.
  importance = np.array([[1.0, 2.0, np.nan, np.nan], [1.0, 1.0, 1.0, 1.0]])
  assert head_pruning.choose_heads(importance, 0.5) == {0: [0], 1: [0, 1]}
  with pytest.raises(ValueError, match=r'fraction=1.5 must be in \[0, 1\]'):
    head_pruning.choose_heads(importance, 1.5)
  with pytest.raises(ValueError, match=r'min_heads_per_layer=3 must be in 0\.\.2'):
    head_pruning.choose_heads(importance, 0.5, min_heads_per_layer=3)
  with pytest.raises(ValueError, match=r'layer 0: .*NaN only after'):
    head_pruning.choose_heads(np.array([[np.nan, 1.0], [1.0, 1.0]]), 0.5)
