"""Tests of objectives/seq2seq.py and objectives/denoising.py (BART token masking)."""

import jax
import jax.numpy as jnp
import numpy as np

from models import presets
from objectives import denoising, mlm, seq2seq
from tests.objectives.test_mlm import TOKENIZER, _batch, _objective


def test_shift_right_restarts_in_every_segment():
  targets = np.array([[11, 12, 13, 21, 22, 0, 0]])
  segment_ids = np.array([[1, 1, 1, 2, 2, 0, 0]])
  got = seq2seq.shift_right(targets, segment_ids, start_id=9)
  np.testing.assert_array_equal(got, [[9, 11, 12, 9, 21, 9, 0]])


def test_preprocess_masks_the_encoder_and_targets_the_original():
  batch = _batch(batch_size=64, length=128)
  out = denoising.make_preprocess(_objective(), TOKENIZER, seed=3)(batch)
  expected_inputs, selected = mlm.make_masker(_objective(), TOKENIZER, seed=3)(batch)
  np.testing.assert_array_equal(out['inputs'], expected_inputs)  # MLM's corruption exactly.
  np.testing.assert_array_equal(out['targets'], batch['tokens'])
  np.testing.assert_array_equal(out['weights'], batch['segment_ids'] > 0)  # Every real token.
  np.testing.assert_array_equal(out['decoder_segment_ids'], batch['segment_ids'])
  starts = np.ones_like(batch['segment_ids'], bool)
  starts[:, 1:] = batch['segment_ids'][:, 1:] != batch['segment_ids'][:, :-1]
  assert np.all(out['decoder_inputs'][starts] == TOKENIZER.eos_id)
  np.testing.assert_array_equal(out['decoder_inputs'][:, 1:][~starts[:, 1:]],
                                batch['tokens'][:, :-1][~starts[:, 1:]])  # fmt: skip
  rate = selected.sum() / ((batch['segment_ids'] > 0) & ~np.isin(batch['tokens'],
                                                                  TOKENIZER.special_ids)).sum()  # fmt: skip
  assert abs(rate - 0.15) < 0.01, rate


def test_loss_is_the_decoders_cross_entropy_under_jit():
  cfg = presets.get_config(
    'bart-base', vocab_size=TOKENIZER.vocab_size, num_layers=1, num_decoder_layers=1,
    d_model=16, num_heads=2, mlp_dim=32, max_len=40,
  )  # fmt: skip
  model = denoising.build_model(cfg)
  batch = denoising.make_preprocess(_objective(), TOKENIZER, seed=0)(_batch(4, 32))
  params = model.init(jax.random.key(0), *model.init_inputs(32))['params']
  loss, metrics = jax.jit(lambda p, b: seq2seq.loss_fn(p, b, None, model=model))(params, batch)
  logits = model.apply({'params': params}, *(batch[k] for k in seq2seq.MODEL_INPUTS))
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
  w = batch['weights']
  np.testing.assert_allclose(loss, (nll * w).sum() / w.sum(), rtol=1e-5)
  assert float(metrics['loss'][1]) == w.sum()
  grads = jax.grad(lambda p: seq2seq.loss_fn(p, batch, jax.random.key(1), model=model)[0])(params)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
