"""Encoder-decoders on the one stack (T5 v1.0 / v1.1, BART): relative position buckets,
the shared embedding, packing of (source, target) pairs, decoder causality."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, presets, transformer

VOCAB = 50
SMALL = dict(vocab_size=VOCAB, num_layers=2, num_decoder_layers=2, d_model=32, num_heads=2,
             mlp_dim=48, head_dim=16)  # fmt: skip
PRESETS = ('t5-small', 't5-v1_1-small', 'bart-base')


def _cfg(name, **overrides):
  cfg = presets.get_config(name, **SMALL, **overrides)
  return cfg.replace(max_len=40) if cfg.position == 'learned' else cfg


def _init(cfg):
  model = heads.Seq2SeqLM(cfg)
  params = jax.jit(model.init)(jax.random.key(0), *model.init_inputs(8))['params']
  return model, nn.unbox(params)


def _run(model, params, src, src_seg, src_pos, tgt, tgt_seg, tgt_pos):
  args = [jnp.asarray(a, jnp.int32)[None] for a in (src, src_seg, src_pos, tgt, tgt_seg, tgt_pos)]
  return np.asarray(jax.jit(model.apply)({'params': params}, *args)[0])


@pytest.mark.parametrize(
  'relative, bidirectional, expected',
  [
    # 32 buckets, 16 per direction, exact below 8, log-spaced up to 128.
    ([0, -1, 1, -7, -8, -20, -127, -200, 200], True, [0, 1, 17, 7, 8, 10, 15, 15, 31]),
    # Decoder: the future shares bucket 0; exact below 16, log-spaced up to 128.
    ([5, 0, -5, -15, -16, -100, -1000], False, [0, 0, 5, 15, 16, 30, 31]),
  ],
)
def test_relative_buckets_by_hand(relative, bidirectional, expected):
  got = transformer.relative_bucket(jnp.asarray(relative), bidirectional, 32, 128)
  np.testing.assert_array_equal(got, expected)


def test_t5_layout_shared_embedding_no_biases_rms_norm():
  model, params = _init(_cfg('t5-small'))
  assert set(params) == {'shared', 'encoder', 'decoder'}  # Tied: no lm_head.
  assert params['shared']['embedding'].shape == (VOCAB, 32)
  for stack in ('encoder', 'decoder'):
    assert 'embed' not in params[stack]  # Shared table, no positions, no norm: no own params.
    assert params[stack]['relative_bias']['embedding'].shape == (32, 2)  # [buckets, heads]
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  names = [jax.tree_util.keystr(path) for path, _ in leaves]
  assert not [n for n in names if 'bias' in n and 'relative_bias' not in n], names
  block = params['decoder']['block_0']
  assert set(block) == {
    'attention', 'attention_norm', 'cross_attention', 'cross_attention_norm', 'mlp', 'mlp_norm'
  }  # fmt: skip
  assert set(block['mlp_norm']) == {'scale'}  # RMS: scale only.
  assert block['attention']['query']['kernel'].shape == (32, 2, 16)  # [embed, heads, head_dim]


def test_t5_v1_1_gated_mlp_and_untied_head():
  _, params = _init(_cfg('t5-v1_1-small'))
  assert set(params['encoder']['block_0']['mlp']) == {'wi_0', 'wi_1', 'wo'}
  assert params['lm_head']['kernel'].shape == (32, VOCAB)


def test_t5_init_follows_fan_in():
  """Mesh TF init: embeddings N(0, 1), query N(0, 1/(d_model x head_dim)), wo N(0, 1/d_ff)."""
  # One layer each side: the scales depend on the widths (t5-small's), not on the depth.
  cfg = presets.get_config('t5-small', vocab_size=2000, num_layers=1, num_decoder_layers=1)
  _, params = _init(cfg)
  std = lambda x: float(np.std(np.asarray(x)))  # noqa: E731
  assert abs(std(params['shared']['embedding']) - 1.0) < 0.02
  query = params['encoder']['block_0']['attention']['query']['kernel']
  assert abs(std(query) * np.sqrt(512 * 64) - 1.0) < 0.02
  wo = params['encoder']['block_0']['mlp']['wo']['kernel']
  assert abs(std(wo) * np.sqrt(2048) - 1.0) < 0.02


SRC_A, SRC_B = np.arange(3, 8), np.arange(10, 16)
TGT_A, TGT_B = np.arange(20, 24), np.arange(30, 37)


@pytest.mark.parametrize('name', PRESETS)
def test_packed_pair_is_decoded_as_if_alone(name):
  model, params = _init(_cfg(name))
  pad = np.zeros(3, int)
  src = np.concatenate([SRC_A, SRC_B, pad])
  src_seg = np.concatenate([np.ones(5), np.full(6, 2), pad])
  src_pos = np.concatenate([np.arange(5), np.arange(6), pad])
  tgt = np.concatenate([TGT_A, TGT_B, pad])
  tgt_seg = np.concatenate([np.ones(4), np.full(7, 2), pad])
  tgt_pos = np.concatenate([np.arange(4), np.arange(7), pad])
  packed = _run(model, params, src, src_seg, src_pos, tgt, tgt_seg, tgt_pos)
  alone = _run(model, params, SRC_B, np.ones(6), np.arange(6), TGT_B, np.ones(7), np.arange(7))
  np.testing.assert_allclose(packed[4:11], alone, atol=1e-5)
  # And B's source really matters: another source gives other logits.
  other = _run(model, params, SRC_A, np.ones(5), np.arange(5), TGT_B, np.ones(7), np.arange(7))
  assert np.abs(other - alone).max() > 1e-3


@pytest.mark.parametrize('name', PRESETS)
def test_decoder_is_causal(name):
  model, params = _init(_cfg(name))
  args = (SRC_B, np.ones(6), np.arange(6))
  base = _run(model, params, *args, TGT_B, np.ones(7), np.arange(7))
  changed_tgt = TGT_B.copy()
  changed_tgt[4] = 45
  changed = _run(model, params, *args, changed_tgt, np.ones(7), np.arange(7))
  np.testing.assert_allclose(changed[:4], base[:4], atol=1e-6)
  assert np.abs(changed[4:] - base[4:]).max() > 1e-3


def test_encoder_decoder_params_have_logical_axis_names():
  cfg = _cfg('t5-small')
  model = heads.Seq2SeqLM(cfg)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *model.init_inputs(8))['params']
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for leaf in leaves:
    assert isinstance(leaf, nn.LogicallyPartitioned), type(leaf)
    assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)
