"""bfloat16 compute with float32 master weights: an encoder, a decoder and an
encoder-decoder train 20 steps in bfloat16 within a stated tolerance of float32.

`model.dtype=bfloat16` runs matmuls and activations in bfloat16; the parameters, the
gradients and the optimizer state stay float32 (`param_dtype`), the attention softmax
and the loss (log-softmax over the vocabulary, its reductions) are float32.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import heads, presets
from objectives.shared import metrics as metrics_lib
from objectives.shared import seq2seq, token_lm
from training import partitioning
from training import state as state_lib

VOCAB, LENGTH, BATCH, STEPS = 128, 32, 8, 20
# bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.2%); over 20 AdamW steps
# the per-step losses stay within this of float32's (measured: at most 0.011, T5).
TOLERANCE = 0.05

FAMILIES = {
  'encoder': ('bert-base', heads.MaskedLM, token_lm.loss_fn),
  'decoder': ('gpt2-small', heads.CausalLM, token_lm.loss_fn),
  'encoder-decoder': ('t5-small', heads.Seq2SeqLM, seq2seq.loss_fn),
}


def _batch(encoder_decoder: bool) -> dict:
  """Two packed documents per row; the targets are the inputs (shifted for the decoder)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32)
  segments = np.where(np.arange(LENGTH) < LENGTH // 2, 1, 2)[None].repeat(BATCH, 0)
  segments[:, -4:] = 0  # Padding.
  segments = segments.astype(np.int32)
  positions = seq2seq.segment_positions(segments)
  weights = (segments > 0).astype(np.float32)
  batch = {'inputs': tokens, 'segment_ids': segments, 'positions': positions}
  if encoder_decoder:
    batch.update(
      decoder_inputs=seq2seq.shift_right(tokens, segments, 1),
      decoder_segment_ids=segments,
      decoder_positions=positions,
    )
  return {**batch, 'targets': tokens, 'weights': weights}


@functools.cache
def _train(family: str, dtype: str):
  preset, head, loss_fn = FAMILIES[family]
  cfg = presets.get_config(
    preset, vocab_size=VOCAB, num_layers=2, d_model=64, num_heads=4, mlp_dim=128, head_dim=16,
    max_len=LENGTH, dropout_rate=0.0, attention_dropout_rate=0.0, activation_dropout_rate=0.0,
    dtype=dtype,
  )  # fmt: skip
  if cfg.num_decoder_layers:
    cfg = cfg.replace(num_decoder_layers=2)
  model = head(cfg)
  tx = optax.adamw(3e-3)
  mesh = partitioning.make_mesh(types.SimpleNamespace(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  rules = partitioning.logical_rules('dp')
  state, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=0, seq_len=LENGTH)
  sharding = partitioning.batch_sharding(mesh)
  step = state_lib.jit_train_step(
    shardings, sharding, mesh=mesh, rules=rules, model=model, loss_fn=loss_fn, tx=tx, seed=0
  )
  batch = partitioning.global_batch(_batch(bool(cfg.num_decoder_layers)), sharding)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, batch)
    losses.append(metrics_lib.summarize(metrics)['loss'])
  return np.asarray(losses), state, model, batch


@pytest.mark.parametrize('family', FAMILIES)
def test_bfloat16_trains_like_float32(family):
  want, _, _, _ = _train(family, 'float32')
  got, state, model, batch = _train(family, 'bfloat16')
  np.testing.assert_array_less(np.abs(got - want), TOLERANCE)
  assert got[-1] < got[0] - 1.0, got  # It learns (the batch repeats).
  # Master weights and optimizer state stay float32.
  dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state)) if x.ndim}
  assert dtypes == {jnp.dtype(jnp.float32)}
  # And the compute is bfloat16: the model's logits come out in it.
  names = seq2seq.MODEL_INPUTS if family == 'encoder-decoder' else token_lm.MODEL_INPUTS
  inputs = [batch[name] for name in names]
  logits = jax.jit(lambda p: model.apply({'params': p}, *inputs))(state.params)
  assert logits.dtype == jnp.bfloat16
