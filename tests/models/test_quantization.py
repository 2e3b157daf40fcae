"""Quantization arithmetic (models/quantization.py) and the quantized Projection: round
trips within half a step per channel and group, bit packing, int8 matmuls in integers
within the quantization error, the straight-through gradient, Q-BERT's bit allocation."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, presets
from models import quantization as q
from models.transformer import Projection


def test_per_channel_codes_and_scales_by_hand():
  kernel = np.array([[1.0, -0.5], [0.25, 2.0], [-0.6, 1.1]], np.float32)  # [in 3, out 2]
  codes, scale = q.quantize(kernel, 1, 8)
  np.testing.assert_allclose(scale, [[1 / 127, 2 / 127]], rtol=1e-6)  # [groups 1, out]
  # 0.25 x 127 = 31.75 -> 32; -0.5 / (2/127) = -31.75 -> -32; -0.6 x 127 = -76.2 -> -76;
  # 1.1 / (2/127) = 69.85 -> 70.
  np.testing.assert_array_equal(codes, [[127, -32], [32, 127], [-76, 70]])
  assert codes.dtype == np.int8
  codes4, scale4 = q.quantize(kernel, 1, 4)
  np.testing.assert_allclose(scale4[0], [1 / 7, 2 / 7], rtol=1e-6)
  np.testing.assert_array_equal(codes4, [[7, -2], [2, 7], [-4, 4]])  # 1.75, 4.2, 3.85.
  np.testing.assert_array_equal(q.quantize(kernel, 1, 2)[0], [[1, 0], [0, 1], [-1, 1]])


@pytest.mark.parametrize('bits', [2, 3, 4, 8])
@pytest.mark.parametrize('group_size', [0, 4])
def test_round_trip_error_is_at_most_half_a_step_of_its_group(bits, group_size):
  rng = np.random.default_rng(bits)
  kernel = rng.normal(size=(2, 8, 3)).astype(np.float32)  # [heads, kv, embed]: 2 inputs axes.
  kernel[0, 1, 2] = 9.0  # An outlier: only its own group's step grows.
  codes, scale = q.quantize(kernel, 2, bits, group_size)
  groups = 16 // (group_size or 16)
  assert scale.shape == (groups, 3)
  error = np.abs(q.dequantize(codes, scale, 2, np.float32) - kernel).reshape(groups, -1, 3)
  assert np.all(error <= scale[:, None, :] / 2 * (1 + 1e-5))
  assert np.abs(codes).max() == q.qmax(bits)  # Each scale is set by its group's largest.
  if group_size:  # The outlier's group (rows 0-3 of column 2) alone has the large step.
    assert scale[0, 2] == pytest.approx(9.0 / q.qmax(bits))
    assert np.all(scale[1:, 2] < 9.0 / q.qmax(bits) / 2)


def test_group_size_must_divide_the_input_rows():
  with pytest.raises(ValueError, match='group_size=5 must divide the 16 input rows'):
    q.quantize(np.ones((16, 2), np.float32), 1, 4, 5)
  with pytest.raises(ValueError, match='bits=9'):
    q.quantize(np.ones((16, 2), np.float32), 1, 9)


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_packing_round_trips_and_takes_a_fraction_of_a_byte(bits):
  top = q.qmax(bits)
  codes = np.random.default_rng(0).integers(-top, top + 1, (4, 8, 3)).astype(np.int8)
  codes[0, :2, 0] = [-top, top]  # The extremes.
  packed = q.pack(codes, 2, bits)
  per = 4 if bits == 2 else 2
  assert packed.dtype == np.uint8 and packed.shape == (4, 8 // per, 3)
  assert packed.nbytes * per == codes.nbytes
  np.testing.assert_array_equal(q.unpack(packed, 2, bits), codes)
  np.testing.assert_array_equal(np.asarray(q.unpack(jnp.asarray(packed), 2, bits)), codes)
  np.testing.assert_array_equal(np.asarray(q.pack(jnp.asarray(codes), 2, bits)), packed)


def test_packed_byte_layout_by_hand():
  codes = np.array([[1], [-1], [3], [-4]], np.int8)  # [in 4, out 1]
  # 4 bits: first weight in the low nibble: 0x01 | 0xF0, then 0x03 | 0xC0.
  np.testing.assert_array_equal(q.pack(codes, 1, 4)[:, 0], [0xF1, 0xC3])
  two = np.array([[1], [-1], [0], [1]], np.int8)
  np.testing.assert_array_equal(q.pack(two, 1, 2)[:, 0], [0b01001101])


def test_int8_matmul_multiplies_in_integers_and_is_within_the_quantization_error():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 5, 16)).astype(np.float32)
  kernel = rng.normal(size=(16, 4, 8)).astype(np.float32) * 0.1  # [embed, heads, kv]
  codes, scale = q.quantize(kernel, 1, 8)
  input_scale = np.float32(np.abs(x).max() / 127)
  y = np.asarray(q.int8_matmul(x, codes, scale, input_scale, 1))
  exact = np.einsum('ble,ehk->blhk', x, kernel)
  # |x W - x' W'| <= |x| |W - W'| + |x - x'| |W'|, each error at most half its step.
  bound = np.einsum('ble,ehk->blhk', np.abs(x), np.broadcast_to(scale / 2, kernel.shape))
  bound += np.einsum('ble,ehk->blhk', np.full_like(x, input_scale / 2), np.abs(kernel) + scale)
  assert np.all(np.abs(y - exact) <= bound * (1 + 1e-5) + 1e-6)
  assert 1e-4 < np.abs(y - exact).max() < 0.02  # Quantized, and close.
  # On the grid already, the integer product is the float product of the codes.
  on_grid = (np.round(x / input_scale) * input_scale).astype(np.float32)
  y_grid = np.asarray(q.int8_matmul(on_grid, codes, scale, input_scale, 1))
  reference = np.einsum('ble,ehk->blhk', on_grid, q.dequantize(codes, scale, 1, np.float32))
  np.testing.assert_allclose(y_grid, reference, rtol=1e-5, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(q.int8_matmul, static_argnums=4)(x, codes, scale, input_scale, 1))
  assert 'dot_general' in jaxpr and 'preferred_element_type=int32' in jaxpr
  assert 'i8[3,5,16]' in jaxpr  # The activations enter the product as int8.


def test_int8_matmul_clips_activations_beyond_the_calibrated_range():
  codes, scale = q.quantize(np.eye(2, dtype=np.float32), 1, 8)
  y = q.int8_matmul(np.array([[0.5, 3.0]], np.float32), codes, scale, np.float32(1 / 127), 1)
  np.testing.assert_allclose(np.asarray(y), [[0.5, 1.0]], atol=1 / 127)


@pytest.mark.parametrize('bits', [8, 4, 2])
def test_weight_only_matmul_is_the_product_with_the_dequantized_kernel(bits):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 3, 2, 8)).astype(np.float32)  # [batch, length, heads, kv]
  kernel = rng.normal(size=(2, 8, 6)).astype(np.float32)
  codes, scale = q.quantize(kernel, 2, bits, 4)
  stored = codes if bits == 8 else q.pack(codes, 2, bits)
  y = np.asarray(q.weight_only_matmul(x, stored, scale, 2, bits))
  dequantized = q.dequantize(codes, scale, 2, np.float32)
  np.testing.assert_allclose(y, np.einsum('blhk,hke->ble', x, dequantized), rtol=1e-5, atol=1e-5)
  error = np.abs(y - np.einsum('blhk,hke->ble', x, kernel))
  bound = np.einsum('blhk,hke->ble', np.abs(x), np.repeat(scale, 4, axis=0).reshape(2, 8, 6) / 2)
  assert np.all(error <= bound * (1 + 1e-5) + 1e-5)


def test_straight_through_gradient_is_the_identity_and_forward_mode_works():
  x = jnp.array([0.26, -0.74, 0.5, 1.0])
  scale = jnp.float32(0.5)
  forward = q.fake_quantize(x, scale, 4)
  np.testing.assert_allclose(np.asarray(forward), [0.5, -0.5, 0.5, 1.0])  # 0.52, 1.48 -> 1, 1.
  weights = jnp.array([1.0, -2.0, 3.0, 0.5])
  grad = jax.grad(lambda v: jnp.sum(weights * q.fake_quantize(v, scale, 4)))(x)
  np.testing.assert_array_equal(np.asarray(grad), np.asarray(weights))
  _, tangent = jax.jvp(lambda v: q.fake_quantize_input(v, 8), (x,), (jnp.ones(4),))
  np.testing.assert_array_equal(np.asarray(tangent), np.ones(4))
  kernel = jnp.array([[0.3, -1.0], [0.9, 0.2]])
  grad = jax.grad(lambda k: jnp.sum(q.fake_quantize_kernel(k, 1, 2) ** 2))(kernel)
  rounded = q.fake_quantize_kernel(kernel, 1, 2)  # Ternary: {-top, 0, top} per column.
  np.testing.assert_allclose(np.asarray(rounded), [[0.0, -1.0], [0.9, 0.0]], atol=1e-7)
  np.testing.assert_allclose(np.asarray(grad), 2 * np.asarray(rounded), atol=1e-7)


def _projection_cfg(**quant):
  cfg = presets.get_config('bert-tiny', vocab_size=64, num_layers=2, d_model=16, num_heads=2)
  return dataclasses.replace(cfg, mlp_dim=32, **quant)


def test_float_projection_is_x_times_kernel_plus_bias_and_records_its_input_range():
  cfg = _projection_cfg()
  layer = Projection(cfg, (16,), (2, 8), ('embed', 'heads', 'kv'))
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  params = nn.unbox(layer.init(jax.random.key(1), x))['params']
  assert set(params) == {'kernel', 'bias'} and params['kernel'].dtype == jnp.float32
  y, recorded = layer.apply({'params': params}, x, mutable=['calibration'])
  expected = np.einsum('ble,ehk->blhk', x, params['kernel']) + np.asarray(params['bias'])
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
  assert float(recorded['calibration']['input_max']) == pytest.approx(float(jnp.abs(x).max()))
  np.testing.assert_array_equal(np.asarray(layer.apply({'params': params}, x)), np.asarray(y))


def _classifier_params(cfg, tokens):
  model = heads.SequenceClassifier(cfg, 2)
  params = model.init(jax.random.key(0), tokens, jnp.ones_like(tokens))['params']
  return model, jax.tree.map(np.asarray, nn.unbox(params))


def _quantized(cfg, tokens, params, bits_of, input_max=None):
  model = heads.SequenceClassifier(cfg, 2)
  init = lambda rng: model.init(rng, tokens, jnp.ones_like(tokens))['params']  # noqa: E731
  target = nn.unbox(jax.eval_shape(init, jax.random.key(0)))
  return model, q.quantize_tree(params, target, bits_of, input_max)


def test_quantized_models_hold_integer_kernels_and_stay_close_to_float():
  tokens = jax.random.randint(jax.random.key(2), (4, 12), 1, 64)
  segments = jnp.ones_like(tokens)
  cfg = _projection_cfg()
  model, params = _classifier_params(cfg, tokens)
  logits, recorded = model.apply({'params': params}, tokens, segments, mutable=['calibration'])
  input_max = {path[:-1]: float(v) for path, v in q.flatten(recorded['calibration']).items()}
  assert len(input_max) == 2 * 6  # q, k, v, out, wi, wo in each of 2 layers.
  int8 = dataclasses.replace(cfg, quant='int8')
  model8, params8 = _quantized(int8, tokens, params, lambda m: 8, input_max)
  wi = params8['encoder']['block_1']['mlp']['wi']
  assert wi['kernel'].dtype == np.int8 and wi['kernel_scale'].shape == (1, 32)
  assert wi['input_scale'] == pytest.approx(input_max[('encoder', 'block_1', 'mlp', 'wi')] / 127)
  assert params8['classifier']['kernel'].dtype == np.float32  # The head stays float.
  out8 = model8.apply({'params': params8}, tokens, segments)
  assert 0 < np.abs(np.asarray(out8) - np.asarray(logits)).max() < 2e-3
  mixed = dataclasses.replace(cfg, quant='weight', quant_group_size=8, quant_layer_bits=(8, 2))
  bits_of = lambda m: mixed.quant_bits_of(q.layer_of(m))  # noqa: E731
  model_mixed, params_mixed = _quantized(mixed, tokens, params, bits_of)
  blocks = params_mixed['encoder']
  assert blocks['block_0']['attention']['out']['kernel'].shape == (2, 8, 16)  # int8
  assert blocks['block_1']['attention']['out']['kernel'].shape == (2, 2, 16)  # 4 per byte
  assert blocks['block_1']['attention']['out']['kernel_scale'].shape == (2, 16)  # per head
  out_mixed = model_mixed.apply({'params': params_mixed}, tokens, segments)
  assert 0 < np.abs(np.asarray(out_mixed) - np.asarray(logits)).max() < 0.1
  fake = dataclasses.replace(cfg, quant='fake', quant_bits=8)
  out_fake = heads.SequenceClassifier(fake, 2).apply({'params': params}, tokens, segments)
  assert 0 < np.abs(np.asarray(out_fake) - np.asarray(logits)).max() < 2e-3
  with pytest.raises(ValueError, match='No calibrated input range'):
    _quantized(int8, tokens, params, lambda m: 8, {})


def test_layer_bits_need_a_looped_stack():
  cfg = _projection_cfg(quant='weight', quant_layer_bits=(8, 4))
  assert cfg.quant_bits_of(1) == 4 and q.layer_of(('encoder', 'block_1', 'mlp', 'wi')) == 1
  with pytest.raises(ValueError, match='layer None is not one of them'):
    cfg.quant_bits_of(None)
  bad = _projection_cfg(quant='int4')
  layer = Projection(bad, (16,), (16,), ('embed', 'mlp'))
  with pytest.raises(ValueError, match="quant='int4'"):
    layer.init(jax.random.key(0), jnp.ones((1, 16)))


def test_assign_bits_gives_the_sharper_layer_more_bits_within_the_budget():
  errors = [{2: 10.0, 4: 1.0, 8: 0.01}] * 3
  bits = q.assign_bits([1.0, 10.0, 0.1], [100, 100, 100], errors, (2, 4, 8), budget=3.5)
  # 1050 bits for 300 weights: 2 bits each (600), then 2 -> 4 on layer 1 (gain 10 x 9 / 200
  # per bit), then on layer 0 (1 x 9 / 200), which beats 4 -> 8 on layer 1 (10 x 0.99 / 400);
  # 2 -> 4 on layer 2 would take 1200 bits.
  assert bits == [4, 4, 2]
  assert q.assign_bits([1.0, 10.0, 0.1], [100] * 3, errors, (2, 4, 8), budget=4.0) == [4, 4, 4]
  assert q.assign_bits([1.0, 10.0, 0.1], [100] * 3, errors, (2, 4, 8), budget=8.0) == [8, 8, 8]
  assert q.assign_bits([1.0, 10.0, 0.1], [100] * 3, errors, (2, 4, 8), budget=2.0) == [2, 2, 2]
  with pytest.raises(ValueError, match='budget=1.5 average bits is below'):
    q.assign_bits([1.0], [1], [{2: 1.0}], (2, 4), budget=1.5)


def test_quantized_token_table_rows_within_half_a_step():
  """The token table of a quantized model: int8 rows, a scale each; a lookup and the tied
  output are within half a quantization step of the float table's."""
  table = np.random.default_rng(7).normal(0, 0.05, size=(50, 16)).astype(np.float32)
  table[3] = 0.0  # An all-zero row keeps scale 1 and reads back as zeros.
  codes, scale = q.quantize_rows(table)
  assert codes.dtype == np.int8 and scale.shape == (50,) and scale[3] == 1.0
  embed = q.QuantizedEmbed(50, 16, ('vocab', 'embed'))
  variables = {'params': {'embedding': codes, 'embedding_scale': scale}}
  ids = np.array([[0, 3, 49]])
  rows = np.asarray(embed.apply(variables, ids))
  step = np.abs(table).max(-1) / 127
  assert np.all(np.abs(rows[0] - table[ids[0]]) <= step[ids[0], None] / 2 + 1e-7)
  query = np.random.default_rng(8).normal(size=(2, 16)).astype(np.float32)
  logits = np.asarray(embed.apply(variables, query, method=q.QuantizedEmbed.attend))
  bound = np.abs(query) @ (step[:, None] / 2 * np.ones((50, 16))).T
  assert np.all(np.abs(logits - query @ table.T) <= bound + 1e-6)
