"""models/attention.py: every implementation this machine can run agrees with the
reference on packed, padded, causal and attention-kinds rows (outputs and gradients);
the reference is jax.nn.dot_product_attention's XLA numerics; kernels that cannot run
say why; attention dropout in the model is the explicit computation under its rng."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import attention, dropout, transformer

BI, L2R, R2L = attention.BIDIRECTIONAL, attention.LEFT_TO_RIGHT, attention.RIGHT_TO_LEFT
HEADS, HEAD_DIM = 2, 8
# Rows of 16: three packed documents; one padded document; two documents then padding;
# all padding (every query sees nothing).
SEGMENTS = np.array(
  [[1] * 5 + [2] * 7 + [3] * 4, [1] * 10 + [0] * 6, [1] * 4 + [2] * 6 + [0] * 6, [0] * 16]
)
# Prefix-LM (UniLM seq2seq: bidirectional source, left-to-right target), left-to-right,
# right-to-left, and a mix within packed documents.
KINDS = np.array(
  [
    [BI] * 2 + [L2R] * 3 + [BI] * 3 + [L2R] * 4 + [R2L] * 4,
    [BI] * 6 + [L2R] * 10,
    [R2L] * 16,
    [L2R] * 16,
  ]
)
CASES = ('packed_padded', 'causal', 'kinds')
# |implementation - reference|: float32 to rounding; bfloat16 to about one bf16 ulp of
# values of order 1 (its 8-bit mantissa), as the kernels round probabilities differently.
TOLERANCE = {jnp.float32: 2e-6, jnp.bfloat16: 2e-2}


def _mask(case: str, segments=SEGMENTS) -> attention.SegmentMask:
  kinds = jnp.asarray(KINDS) if case == 'kinds' else None
  return attention.SegmentMask.self_attend(
    jnp.asarray(segments), causal=case == 'causal', kinds=kinds
  )


def _qkv(dtype, batch: int, length: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  shape = (batch, length, HEADS, HEAD_DIM)
  return tuple(jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))


def _value_and_grads(fn, q, k, v):
  """fn's output and the gradients of a random projection of it w.r.t. q, k, v."""
  weights = jnp.asarray(np.random.default_rng(9).normal(size=q.shape), jnp.float32)
  loss = lambda *qkv: jnp.sum(fn(*qkv).astype(jnp.float32) * weights)  # noqa: E731
  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
  return jax.jit(fn)(q, k, v), grads


def _numpy_attention(q, k, v, allowed) -> np.ndarray:
  """Float64, one query at a time: softmax over the allowed keys, zeros where none."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  out = np.zeros_like(q)
  for b, h, i in np.ndindex(q.shape[0], q.shape[2], q.shape[1]):
    keys = np.flatnonzero(allowed[b, i])
    if keys.size:
      logits = k[b, keys, h] @ q[b, i, h] / np.sqrt(q.shape[-1])
      p = np.exp(logits - logits.max())
      out[b, i, h] = (p / p.sum()) @ v[b, keys, h]
  return out


def _allowed(case: str) -> np.ndarray:
  """[batch, q, kv] written out position by position from the rules in models/attention.py."""
  batch, length = SEGMENTS.shape
  allowed = np.zeros((batch, length, length), bool)
  for b, i, j in np.ndindex(batch, length, length):
    if SEGMENTS[b, i] == 0 or SEGMENTS[b, i] != SEGMENTS[b, j]:
      continue
    if case == 'causal':
      allowed[b, i, j] = j <= i
    elif case == 'kinds' and KINDS[b, j] != BI:
      allowed[b, i, j] = j >= i if KINDS[b, i] == R2L else j <= i
    else:
      allowed[b, i, j] = True
  return allowed


@pytest.mark.parametrize('case', CASES)
def test_reference_is_exact_attention(case):
  q, k, v = _qkv(jnp.float32, *SEGMENTS.shape)
  mask = _mask(case)
  np.testing.assert_array_equal(np.asarray(mask.dense())[:, 0], _allowed(case))
  out = attention.xla_attention(q, k, v, mask, scale=HEAD_DIM**-0.5)
  expected = _numpy_attention(q, k, v, _allowed(case))
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-6)
  assert not np.asarray(out)[3].any()  # The all-padding row gives zeros.


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['f32', 'bf16'])
@pytest.mark.parametrize('case', CASES)
def test_reference_keeps_jax_nn_numerics(case, dtype):
  """Dropout 0: the outputs of jax.nn.dot_product_attention('xla') with the dense mask
  (what the model ran before), fully masked queries zeroed, bit for bit; its gradients
  to float32 rounding. In bfloat16 the products run on [batch, heads, length, head_dim]
  views (models/attention.py), so the backward pass rounds its sums in another order:
  the gradients are held to being as close to the float32 gradients as jax.nn's own
  bfloat16 gradients are (measured: 0.004-0.012 from float32 for both, values up to 3.7)."""
  q, k, v = _qkv(dtype, *SEGMENTS.shape)
  mask = _mask(case)

  def before(q, k, v):
    dense = mask.dense()
    out = jax.nn.dot_product_attention(q, k, v, mask=dense, implementation='xla')
    return jnp.where(dense.any(axis=-1).transpose(0, 2, 1)[..., None], out, 0)

  def now(q, k, v):
    return attention.dot_product_attention(q, k, v, mask, implementation='xla')

  out, grads = _value_and_grads(now, q, k, v)
  expected, expected_grads = _value_and_grads(before, q, k, v)
  np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))
  if dtype == jnp.float32:
    for got, want in zip(grads, expected_grads, strict=True):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)  # Measured 2.4e-7.
    return
  _, exact = _value_and_grads(before, *(t.astype(jnp.float32) for t in (q, k, v)))
  for got, want, truth in zip(grads, expected_grads, exact, strict=True):
    got, want, truth = (np.asarray(t, np.float32) for t in (got, want, truth))
    np.testing.assert_allclose(got, want, atol=TOLERANCE[jnp.bfloat16])
    # One bfloat16 ulp of the largest gradient of slack over jax.nn's own error.
    slack = np.max(np.abs(truth)) * 2.0**-8
    assert np.max(np.abs(got - truth)) <= np.max(np.abs(want - truth)) + slack


# Splash tiles are multiples of 128 positions: rows of 128, packed and padded.
SPLASH_SEGMENTS = np.array(
  [[1] * 50 + [2] * 60 + [3] * 18, [1] * 100 + [0] * 28, [1] * 40 + [2] * 30 + [0] * 58]
)


def _cpu_implementations():
  """The implementations this machine runs, beside the reference: splash in Pallas'
  interpreter (its TPU kernel, interpreted on CPU) when it imports."""
  if attention._splash is None:
    return []
  return ['splash']


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['f32', 'bf16'])
@pytest.mark.parametrize('causal', [False, True], ids=['bidirectional', 'causal'])
@pytest.mark.parametrize('implementation', _cpu_implementations())
def test_implementations_match_the_reference(implementation, causal, dtype):
  q, k, v = _qkv(dtype, *SPLASH_SEGMENTS.shape)
  mask = attention.SegmentMask.self_attend(jnp.asarray(SPLASH_SEGMENTS), causal=causal)
  scale = HEAD_DIM**-0.5
  kernels = {
    'splash': lambda q, k, v: attention.splash_attention(q, k, v, mask, scale=scale, interpret=True)
  }
  out, grads = _value_and_grads(kernels[implementation], q, k, v)
  reference = lambda q, k, v: attention.xla_attention(q, k, v, mask, scale=scale)  # noqa: E731
  expected, expected_grads = _value_and_grads(reference, q, k, v)
  tol = TOLERANCE[dtype]
  np.testing.assert_allclose(
    np.asarray(out, np.float32), np.asarray(expected, np.float32), atol=tol
  )
  for got, want in zip(grads, expected_grads, strict=True):
    scale_of = np.abs(np.asarray(want, np.float32)).max()
    np.testing.assert_allclose(
      np.asarray(got, np.float32), np.asarray(want, np.float32), atol=tol * max(scale_of, 1.0)
    )
  assert not np.asarray(out, np.float32)[1, 100:].any()  # Padding queries: zeros.


def test_attention_kinds_are_not_splash_masks():
  q, k, v = _qkv(jnp.float32, 4, 128)
  kinds = jnp.zeros((4, 128), jnp.int32)
  mask = attention.SegmentMask.self_attend(jnp.ones((4, 128), jnp.int32), kinds=kinds)
  with pytest.raises(ValueError, match=r"attention_impl='splash'.*attention kinds"):
    attention.select_implementation('splash', q, k, mask, platform='tpu')
  prefixed = attention.SegmentMask.self_attend(jnp.ones((4, 128), jnp.int32)).replace(prefix=4)
  with pytest.raises(ValueError, match=r"attention_impl='splash'.*prefixes"):
    attention.select_implementation('splash', q, k, prefixed, platform='tpu')


def test_auto_picks_xla_on_cpu_and_kernels_only_where_exact():
  q, k, v = _qkv(jnp.float32, 2, 128)
  mask = attention.SegmentMask.self_attend(jnp.ones((2, 128), jnp.int32))
  select = attention.select_implementation
  assert jax.default_backend() == 'cpu'
  for implementation in ('', None):
    assert select(implementation, q, k, mask) == 'xla'
    assert select(implementation, q, k, mask, dropout_rate=0.1) == 'xla'
  assert select('', q, k, mask, platform='tpu') == 'splash'
  assert select('', q, k, mask, platform='tpu', dropout_rate=0.1) == 'xla'  # No rng-exact kernel.
  assert select('', q, k, mask, platform='tpu', bias=jnp.zeros((2, 2, 128, 128))) == 'xla'
  assert select('', q[:, :16], k[:, :16], mask, platform='tpu') == 'xla'
  assert select('', q, k, mask, platform='gpu') == 'xla'  # No cuDNN in this process.


@pytest.mark.parametrize(
  'implementation, platform, kwargs, match',
  [
    ('cudnn', None, {}, r"cudnn.*needs an NVIDIA GPU with cuDNN.*runs on 'cpu'"),
    ('cudnn', 'gpu', {}, r'cuDNN was not found'),
    ('splash', None, {}, r"splash.*needs a TPU.*runs on 'cpu'"),
    ('splash', 'tpu', {'dropout_rate': 0.1}, r'splash attention has no dropout'),
    ('splash', 'tpu', {'bias': jnp.zeros((2, 2, 128, 128))}, r'no additive bias'),
    ('flash', None, {}, r"Unknown attention_impl 'flash'.*'xla', 'cudnn', 'splash'"),
  ],
)
def test_kernels_that_cannot_run_say_why(implementation, platform, kwargs, match):
  q, k, v = _qkv(jnp.float32, 2, 128)
  mask = attention.SegmentMask.self_attend(jnp.ones((2, 128), jnp.int32))
  with pytest.raises(ValueError, match=match):
    attention.select_implementation(implementation, q, k, mask, platform=platform, **kwargs)


def test_the_model_names_a_missing_gpu():
  cfg = transformer.TransformerConfig(
    vocab_size=32, num_layers=1, d_model=16, num_heads=2, mlp_dim=32, attention_impl='cudnn'
  )
  tokens = jnp.ones((1, 8), jnp.int32)
  with pytest.raises(ValueError, match=r"attention_impl='cudnn'.*NVIDIA GPU"):
    jax.eval_shape(transformer.Stack(cfg).init, jax.random.key(0), tokens, tokens)


def test_cudnn_segments_describe_the_same_mask():
  """Segment ids -> cuDNN's per-segment lengths and offsets, and back to the mask."""
  lengths, offsets = attention.cudnn_segments(jnp.asarray(SEGMENTS))
  assert lengths.shape == (4, 16) and offsets.shape == (4, 17)
  np.testing.assert_array_equal(lengths[0, :4], [5, 7, 4, -1])
  np.testing.assert_array_equal(offsets[0, :4], [0, 5, 12, -1])
  np.testing.assert_array_equal(lengths[2, :3], [4, 6, -1])
  np.testing.assert_array_equal(offsets[2, :3], [0, 4, -1])
  assert (np.asarray(lengths)[3] == -1).all() and (np.asarray(offsets)[:, -1] == -1).all()
  # Position t belongs to segment slot s when offsets[s] <= t < offsets[s] + lengths[s].
  t = np.arange(16)
  lengths, offsets = np.asarray(lengths), np.asarray(offsets)[:, :-1]
  member = (offsets[:, :, None] <= t) & (t < offsets[:, :, None] + lengths[:, :, None])
  slot = np.where(member.any(axis=1), member.argmax(axis=1) + 1, 0)  # [batch, length]
  np.testing.assert_array_equal(slot, SEGMENTS)


def _tiny(rate: float) -> transformer.TransformerConfig:
  return transformer.TransformerConfig(
    vocab_size=32, num_layers=1, d_model=16, num_heads=2, mlp_dim=32,
    attention_dropout_rate=rate,
  )  # fmt: skip


def _explicit_attention(params, x, mask, rng, rate):
  """The attention layer written out: projections, fp32 softmax over the allowed keys,
  dropout over [batch, heads, q, kv] from `rng` (models/dropout.py's 16-bit draws, checked
  by hand in tests/models/test_dropout.py: dropped below round(rate x 2^16), kept ones
  scaled by 2^16 / (2^16 - that)), zeros for padding queries, output projection."""
  proj = lambda name, t: (  # noqa: E731
    jnp.einsum('ble,ehd->blhd', t, params[name]['kernel']) + params[name]['bias']
  )
  q, k, v = proj('query', x), proj('key', x), proj('value', x)
  allowed = jnp.asarray(_allowed('packed_padded'))[:, None]  # [batch, 1, q, kv]
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  probs = jax.nn.softmax(jnp.where(allowed, logits, -1e30), axis=-1)
  draws = dropout.draws(rng, probs.shape)
  threshold = round(rate * 65536)
  probs = jnp.where(draws >= threshold, probs * (65536 / (65536 - threshold)), 0.0)
  out = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
  out = jnp.where(allowed.any(axis=-1).transpose(0, 2, 1)[..., None], out, 0.0)
  return jnp.einsum('blhd,hde->ble', out, params['out']['kernel']) + params['out']['bias']


def test_attention_dropout_in_the_model_is_the_explicit_computation():
  rate = 0.3
  layer = transformer.Attention(_tiny(rate))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16, 16)), jnp.float32)
  mask = _mask('packed_padded')
  variables = layer.init(jax.random.key(0), x, x, mask, True)
  # Weights 10x the init's, so the softmax is far from uniform and the outputs of order 1.
  params = jax.tree.map(lambda p: p * 10, nn.unbox(variables)['params'])
  key = jax.random.key(7)
  # The key the layer draws from its 'dropout' stream (flax derives it from the path).
  rng = nn.apply(lambda bound: bound.make_rng('dropout'), layer)(variables, rngs={'dropout': key})

  def model(params):
    return layer.apply({'params': params}, x, x, mask, False, rngs={'dropout': key})

  def explicit(params):
    return _explicit_attention(params, x, mask, rng, rate)

  out, explicit_out = jax.jit(model)(params), jax.jit(explicit)(params)
  np.testing.assert_allclose(np.asarray(out), np.asarray(explicit_out), atol=1e-5)
  evaluation = layer.apply({'params': params}, x, x, mask, True)
  assert np.abs(np.asarray(out - evaluation)).max() > 0.1 * np.abs(evaluation).max()  # Dropped.
  loss = lambda fn: lambda p: jnp.sum(fn(p) ** 2)  # noqa: E731
  grads = jax.jit(jax.grad(loss(model)))(params)
  explicit_grads = jax.jit(jax.grad(loss(explicit)))(params)
  # Relative to the largest gradient: the key bias's is zero but for rounding (a softmax
  # does not see a constant added to every logit).
  atol = 1e-5 * max(np.abs(g).max() for g in jax.tree.leaves(explicit_grads))
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(explicit_grads), strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=atol)


@pytest.fixture
def cudnn_without_gpu(monkeypatch):
  """jax's cuDNN API on this CPU machine as far as lowering goes: its version and
  compute-capability checks (the only parts that ask the GPU) answer as an H100 would."""
  cudnn = attention._cudnn
  if cudnn is None:
    pytest.skip('jax._src.cudnn does not import')
  monkeypatch.setattr(cudnn, 'check_cudnn_version', lambda: 91000)
  monkeypatch.setattr(cudnn, 'check_compute_capability', lambda capability: True)
  monkeypatch.setattr(cudnn, 'is_cuda_compute_capability_equal', lambda capability: False)
  return cudnn


def _cuda_program(fn, *args) -> str:
  """StableHLO of fn's value and gradients, lowered for CUDA."""
  grad = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))
  return grad.trace(*args).lower(lowering_platforms=('cuda',)).as_text()


@pytest.mark.parametrize('causal', [False, True], ids=['bidirectional', 'causal'])
def test_cudnn_lowers_to_flash_attention_without_a_dense_mask(cudnn_without_gpu, causal):
  mask = attention.SegmentMask.self_attend(jnp.asarray(SPLASH_SEGMENTS[:2]), causal=causal)
  qkv = [jax.ShapeDtypeStruct((2, 128, HEADS, 64), jnp.bfloat16)] * 3

  def loss(q, k, v):
    out = attention.cudnn_attention(q, k, v, mask, scale=0.125, dropout_rate=0.1, dropout_seed=7)
    return jnp.sum(out.astype(jnp.float32))

  program = _cuda_program(loss, *qkv)
  assert 'custom_call @__cudnn$fmhaSoftmaxDropout(' in program
  assert 'custom_call @__cudnn$fmhaSoftmaxDropoutBackward(' in program
  config = program.replace('\\22', '"')
  assert '"is_flash_attention": true' in config
  assert f'"mask_type": "{"CAUSAL" if causal else "NO_MASK"}"' in config
  assert '"dropout_rate": 0.1' in config and '"seed": 7' in config
  assert '128x128' not in program  # No [q, kv] tensor at all: no mask, no logits.


def test_the_model_runs_cudnn_with_a_seed_per_layer(cudnn_without_gpu, monkeypatch):
  """A bfloat16 BERT training step lowered for CUDA with attention_impl='cudnn': every
  layer's attention is a cuDNN call with attention dropout and a seed of its own."""
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  cfg = transformer.TransformerConfig(
    vocab_size=32, num_layers=2, d_model=32, num_heads=2, mlp_dim=64, max_len=128,
    dtype='bfloat16', attention_impl='cudnn',
  )  # fmt: skip
  model = transformer.Stack(cfg)
  tokens = jnp.ones((2, 128), jnp.int32)
  segments = jnp.asarray(SPLASH_SEGMENTS[:2])
  params = jax.eval_shape(model.init, jax.random.key(0), tokens, segments)['params']

  def loss(params):
    out = model.apply(
      {'params': params}, tokens, segments, deterministic=False, rngs={'dropout': jax.random.key(0)}
    )
    return jnp.sum(out.astype(jnp.float32))

  program = _cuda_program(loss, params).replace('\\22', '"')
  assert program.count('custom_call @__cudnn$fmhaSoftmaxDropout(') == 2
  seeds = set(re.findall(r'"dropout_rate": 0.1, "seed": (\d+)', program))
  assert len(seeds) == 2, seeds
  assert '128x128' not in program


def test_what_cudnn_cannot_compute_is_named(cudnn_without_gpu, monkeypatch):
  q, k, _ = _qkv(jnp.bfloat16, 2, 128)
  mask = attention.SegmentMask.self_attend(jnp.ones((2, 128), jnp.int32))
  select = functools.partial(attention.select_implementation, platform='gpu')
  assert select('cudnn', q, k, mask, dropout_rate=0.1) == 'cudnn'
  assert select('', q, k, mask) == 'cudnn'
  assert select('', q, k, mask, dropout_rate=0.1) == 'xla'  # Its masks are not the step's rng's.
  problems = [
    (dict(q=q.astype(jnp.float32)), r'takes bfloat16 or float16, got float32'),
    (dict(dropout_rate=0.1, replayed_layers=True), r'scanned or shared stack'),
    (dict(mask=attention.SegmentMask.self_attend(mask.q_segment_ids, kinds=mask.q_segment_ids)),
     r'attention kinds'),
    (dict(mask=mask.replace(prefix=4)), r'key/value prefixes \(model.prefix_length\)'),
  ]  # fmt: skip
  for change, match in problems:
    args = dict(dict(q=q, k=k, mask=mask), **change)
    with pytest.raises(ValueError, match=match):
      select('cudnn', args.pop('q'), args.pop('k'), args.pop('mask'), **args)
  monkeypatch.setattr(cudnn_without_gpu, 'check_compute_capability', lambda capability: False)
  with pytest.raises(ValueError, match=r'packed sequences need a Hopper \(sm_90\) or newer GPU'):
    select('cudnn', q, k, mask)
  assert select('', q, k, mask) == 'xla'  # An A100: auto keeps the reference.
  monkeypatch.setattr(cudnn_without_gpu, 'check_cudnn_version', lambda: 90500)
  with pytest.raises(ValueError, match=r'packed sequences need cuDNN 9.6 or newer.*cuDNN 90500'):
    select('cudnn', q, k, mask)


def test_softmax_is_jax_nn_softmax_with_the_softmax_derivative():
  """Values bit for bit, a fully masked row (the reference's large negative) included;
  gradients and forward-mode derivatives as autodiff's through jax.nn.softmax, to
  float32 rounding."""
  logits = np.random.default_rng(0).normal(size=(3, 4, 16)).astype(np.float32) * 4
  logits[1, 2] = -0.7 * np.finfo(np.float32).max  # A query that sees no key.
  logits = jnp.asarray(logits)
  np.testing.assert_array_equal(
    np.asarray(attention.softmax(logits)), np.asarray(jax.nn.softmax(logits, axis=-1))
  )
  weights = jnp.asarray(np.random.default_rng(1).normal(size=logits.shape).astype(np.float32))
  grad = jax.grad(lambda x: jnp.sum(attention.softmax(x) * weights))(logits)
  expected = jax.grad(lambda x: jnp.sum(jax.nn.softmax(x, axis=-1) * weights))(logits)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), atol=1e-6)
  assert np.isfinite(np.asarray(grad)).all()
  _, tangent = jax.jvp(attention.softmax, (logits,), (weights,))
  _, expected_tangent = jax.jvp(lambda x: jax.nn.softmax(x, axis=-1), (logits,), (weights,))
  np.testing.assert_allclose(np.asarray(tangent), np.asarray(expected_tangent), atol=1e-6)
