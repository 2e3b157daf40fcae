"""The papers' parameter tables, reproduced exactly by the presets of the one stack.

Counts are those of the released checkpoints (models/presets.py docstring): the
backbone, embeddings counted once, learned positions included, BERT-family
encoders with their pooler, ELECTRA and DistilBERT without pooler or head.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, presets

EXACT = {
  'bert-base': 109_482_240,
  'mobilebert': 24_844_544,  # transformers' MobileBertModel(MobileBertConfig()), pooler included.
  'bert-large': 335_141_888,
  'roberta-base': 124_645_632,
  'roberta-large': 355_359_744,
  'albert-base': 11_683_584,
  'albert-large': 17_683_968,
  'albert-xlarge': 58_724_864,
  'albert-xxlarge': 222_595_584,  # The paper's Table 1 says 235M.
  'electra-small': 13_483_008,
  'electra-base': 108_891_648,
  'electra-large': 334_092_288,
  'distilbert': 66_362_880,
  'gpt2-small': 124_439_808,  # The paper says 117M.
  'gpt2-medium': 354_823_168,  # 345M.
  'gpt2-large': 774_030_080,  # 762M.
  'gpt2-xl': 1_557_611_200,  # 1542M.
  't5-small': 60_506_624,  # The paper rounds to 60M.
  't5-base': 222_903_552,  # 220M.
  't5-large': 737_668_096,  # 770M.
  't5-3b': 2_851_598_336,  # 2.8B (3B in the name).
  't5-11b': 11_307_321_344,  # 11B.
  't5-v1_1-small': 76_961_152,  # google/t5-v1_1-small, its untied output included.
  'bart-base': 139_420_416,  # The paper says 140M.
  'bart-large': 406_291_456,  # 400M.
}


@pytest.mark.parametrize('name', EXACT)
def test_released_checkpoint_counts(name):
  assert presets.count_params(presets.get_config(name)) == EXACT[name]


def test_gpt3_175b_within_a_thousandth_of_the_paper():
  count = presets.count_params(presets.get_config('gpt3-175b'))
  assert abs(count - 174.6e9) / 174.6e9 < 1e-3, count


@pytest.mark.parametrize(
  'name, paper',
  [('gpt3-small', 125e6), ('gpt3-medium', 350e6), ('gpt3-large', 760e6), ('gpt3-2.7b', 2.7e9),
   ('gpt3-6.7b', 6.7e9), ('gpt3-13b', 13e9), ('tinybert-4', 14.5e6), ('gpt1', 117e6)],
)  # fmt: skip
def test_rounded_paper_counts(name, paper):
  count = presets.count_params(presets.get_config(name))
  assert abs(count - paper) / paper < 0.02, count


@pytest.mark.slow
def test_every_preset_builds():
  """Each preset not counted above still initializes (abstractly) to a positive count."""
  counted = {*EXACT, 'gpt3-175b', 'gpt3-small', 'gpt3-medium', 'gpt3-large', 'gpt3-2.7b',
             'gpt3-6.7b', 'gpt3-13b', 'tinybert-4', 'gpt1'}  # fmt: skip
  for name in presets.names():
    if name not in counted:
      assert presets.count_params(presets.get_config(name)) > 0, name


def _tiny(name, **overrides):
  small = dict(num_layers=3, d_model=32, num_heads=2, mlp_dim=64, vocab_size=97)
  cfg = presets.get_config(name, **small, **overrides)
  return cfg.replace(embed_dim=16) if cfg.embed_dim else cfg


def _init(cfg, boxed=False):
  tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % cfg.vocab_size
  model = heads.Backbone(cfg)
  params = model.init(jax.random.key(0), tokens, jnp.ones_like(tokens))['params']
  return model, tokens, params if boxed else nn.unbox(params)


@pytest.mark.parametrize('name', ['albert-base', 'roberta-base', 'electra-small', 'gpt1'])
def test_every_family_param_has_logical_axis_names(name):
  _, _, params = _init(_tiny(name), boxed=True)
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), type(leaf)
    assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)


def test_albert_shares_one_block_and_factorizes_embeddings():
  cfg = _tiny('albert-base')
  model, tokens, params = _init(cfg)
  encoder = params['encoder']
  assert sorted(k for k in encoder if k.startswith('block')) == ['block']  # One block, 3 layers.
  assert encoder['embed']['token']['embedding'].shape == (97, 16)  # [vocab, E]
  assert encoder['embed']['project']['kernel'].shape == (16, 32)  # [E, d_model]
  hidden, pooled = model.apply({'params': params}, tokens, jnp.ones_like(tokens))
  assert hidden.shape == (2, 6, 32) and pooled.shape == (2, 32)
  # Depth really reuses the block: 3 applications differ from 1.
  one = heads.Backbone(cfg.replace(num_layers=1)).apply({'params': params}, tokens, tokens * 0 + 1)
  assert not np.allclose(one[0], hidden)


def test_roberta_positions_start_after_the_padding_offset():
  cfg = _tiny('roberta-base')
  model, tokens, params = _init(cfg)
  table = params['encoder']['embed']['position']['embedding']
  assert table.shape == (cfg.max_len, 32) and cfg.max_positions == 512
  # Rows 0 and 1 (padding_idx and below) are never read: changing them changes nothing.
  edited = jax.tree.map(lambda x: x, params)
  edited['encoder']['embed']['position']['embedding'] = table.at[:2].set(7.0)
  segments = jnp.ones_like(tokens)
  np.testing.assert_array_equal(
    model.apply({'params': params}, tokens, segments)[0],
    model.apply({'params': edited}, tokens, segments)[0],
  )


@pytest.mark.parametrize('name', ['electra-small', 'distilbert', 'gpt2-small'])
def test_families_without_pooler(name):
  _, _, params = _init(_tiny(name))
  assert 'pooler' not in params
