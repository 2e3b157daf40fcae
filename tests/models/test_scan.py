"""Scanned layers (nn.scan) and rematerialization compute what the loop computes, and
models/convert/scan.py moves params between the two layouts (whole runs:
tests/tools/test_relayout.py). Computations are jitted: eager dispatch of every op
costs a CPU far more than compiling once."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import heads, presets
from models.convert import scan

SMALL = dict(vocab_size=60, num_layers=3, d_model=32, num_heads=2, mlp_dim=64)
MODELS = {  # preset -> pretraining model; one per kind of stack.
  'bert-tiny': heads.MaskedLM,
  'gpt2-tiny': heads.CausalLM,
  't5-small': heads.Seq2SeqLM,
  'bart-base': heads.Seq2SeqLM,
}


def _setup(preset, **overrides):
  extra = dict(num_decoder_layers=2, head_dim=16) if MODELS[preset] is heads.Seq2SeqLM else {}
  cfg = presets.get_config(preset, **SMALL, **extra, **overrides)
  if cfg.position == 'learned':
    cfg = cfg.replace(max_len=64)
  model = MODELS[preset](cfg)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(5, 60, size=(2, 10)), jnp.int32)
  segments = jnp.asarray([[1] * 6 + [2] * 4, [1] * 8 + [0] * 2], jnp.int32)
  positions = jnp.asarray([list(range(6)) + list(range(4)), list(range(8)) + [0, 0]], jnp.int32)
  args = (tokens, segments, positions)
  if MODELS[preset] is heads.Seq2SeqLM:
    args = args * 2
  return cfg, model, args


def _loss(model, params, args):
  logits = model.apply({'params': params}, *args)
  return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])


@pytest.mark.parametrize('preset', MODELS)
def test_scanned_layers_compute_what_the_loop_computes(preset):
  cfg, looped_model, args = _setup(preset)
  params = nn.unbox(jax.jit(looped_model.init)(jax.random.key(0), *args)['params'])
  scanned_model = type(looped_model)(cfg.replace(scan_layers=True))
  scanned = scan.to_scanned(jax.tree.map(np.asarray, params))
  # The scanned model's own init has exactly this layout.
  own = nn.unbox(jax.eval_shape(scanned_model.init, jax.random.key(0), *args)['params'])
  assert jax.tree.map(np.shape, own) == jax.tree.map(np.shape, scanned)
  np.testing.assert_allclose(
    jax.jit(looped_model.apply)({'params': params}, *args),
    jax.jit(scanned_model.apply)({'params': scanned}, *args),
    atol=1e-5,
  )
  grads = jax.jit(jax.grad(lambda p: _loss(looped_model, p, args)))(params)
  scanned_grads = jax.jit(jax.grad(lambda p: _loss(scanned_model, p, args)))(scanned)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
    scan.to_scanned(jax.tree.map(np.asarray, grads)),
    scanned_grads,
  )
  back = scan.to_looped(scanned)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))


def test_scanned_params_carry_the_layers_axis():
  cfg, _, args = _setup('bert-tiny', scan_layers=True)
  boxed = heads.MaskedLM(cfg).init(jax.random.key(0), *args)['params']
  query = boxed['encoder']['blocks']['attention']['query']['kernel']
  assert query.names == ('layers', 'embed', 'heads', 'kv')
  assert query.value.shape == (3, 32, 2, 16)


@pytest.mark.parametrize('remat', ['full', 'dots'])
@pytest.mark.parametrize('scan_layers', [False, True])
def test_remat_changes_memory_not_numbers(remat, scan_layers):
  cfg, model, args = _setup('gpt2-tiny', scan_layers=scan_layers)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), *args)['params'])
  rematted = heads.CausalLM(cfg.replace(remat=remat))
  base = jax.jit(jax.value_and_grad(lambda p: _loss(model, p, args)))(params)
  again = jax.jit(jax.value_and_grad(lambda p: _loss(rematted, p, args)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), base, again)


def test_layout_errors_are_clear():
  with pytest.raises(ValueError, match='not numbered'):
    scan.to_scanned({'block_0': {'w': np.zeros(2)}, 'block_2': {'w': np.zeros(2)}})
  with pytest.raises(ValueError, match='scan_layers with share_layers'):
    cfg, _, args = _setup('bert-tiny', share_layers=True, scan_layers=True)
    heads.MaskedLM(cfg).init(jax.random.key(0), *args)
