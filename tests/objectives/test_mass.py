"""Tests of objectives/mass.py: one contiguous fragment of round(0.5 n) tokens per segment."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from models import presets
from objectives import mass
from objectives.shared import seq2seq
from tests.objective_config import objective_config
from tests.objectives.test_denoising import _framed_batch
from tests.objectives.test_mlm import TOKENIZER

CFG = objective_config(fragment_rate=0.5)


def test_fragment_is_contiguous_round_half_and_never_special():
  batch = _framed_batch(256, 256)
  chosen = mass.make_fragmenter(CFG, TOKENIZER, seed=1)(batch)
  assert not np.any(chosen & np.isin(batch['tokens'], TOKENIZER.special_ids))
  offsets = []
  for r in range(256):
    for s in (1, 2):
      inside = batch['segment_ids'][r] == s
      n = int((inside & ~np.isin(batch['tokens'][r], TOKENIZER.special_ids)).sum())
      where = np.flatnonzero(chosen[r] & inside)
      assert len(where) == round(0.5 * n)
      np.testing.assert_array_equal(where, np.arange(where[0], where[0] + len(where)))
      offset = where[0] - np.flatnonzero(inside)[0] - 1  # Tokens after BOS: uniform.
      offsets.append((offset + 0.5) / (n - len(where) + 1))
  assert scipy.stats.kstest(offsets, 'uniform').pvalue > 1e-3


def test_encoder_masks_the_fragment_decoder_predicts_only_it():
  batch = _framed_batch(64, 128)
  out = mass.make_preprocess(CFG, TOKENIZER, seed=1)(batch)
  chosen = mass.make_fragmenter(CFG, TOKENIZER, seed=1)(batch)
  np.testing.assert_array_equal(out['inputs'], np.where(chosen, TOKENIZER.mask_id, batch['tokens']))
  np.testing.assert_array_equal(out['segment_ids'], batch['segment_ids'])
  np.testing.assert_array_equal(out['positions'], batch['positions'])
  w = out['weights'] > 0
  np.testing.assert_array_equal(w.sum(1), chosen.sum(1))  # Weights only on the fragment.
  for r in range(8):
    np.testing.assert_array_equal(out['targets'][r][w[r]], batch['tokens'][r][chosen[r]])
    np.testing.assert_array_equal(out['decoder_positions'][r][w[r]],
                                  batch['positions'][r][chosen[r]])  # fmt: skip
  # Decoder inputs: EOS at each fragment's start, then the fragment's previous token.
  seg = out['decoder_segment_ids']
  starts = np.ones_like(w)
  starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
  assert np.all(out['decoder_inputs'][w & starts] == TOKENIZER.eos_id)
  inner = (w & ~starts)[:, 1:]
  np.testing.assert_array_equal(out['decoder_inputs'][:, 1:][inner], out['targets'][:, :-1][inner])
  assert np.all(out['targets'][~w] == 0) and np.all(seg[~w] == 0)


def test_deterministic_per_example_and_new_each_epoch():
  pre = mass.make_preprocess(CFG, TOKENIZER, seed=2)
  whole = pre(_framed_batch(16, 128))
  part = pre({k: v[8:] for k, v in _framed_batch(16, 128).items()})
  np.testing.assert_array_equal(whole['inputs'][8:], part['inputs'])
  other = pre(_framed_batch(16, 128, epoch=1))
  assert np.mean(np.any(other['inputs'] != whole['inputs'], axis=1)) > 0.8


def test_loss_is_the_fragment_cross_entropy_under_jit():
  cfg = presets.get_config(
    'mass-base', vocab_size=TOKENIZER.vocab_size, num_layers=1, num_decoder_layers=1,
    d_model=16, num_heads=2, mlp_dim=32, max_len=40,
  )  # fmt: skip
  model = mass.build_model(cfg)
  raw = _framed_batch(4, 32)
  batch = mass.make_preprocess(CFG, TOKENIZER, seed=0)(raw)
  params = jax.jit(model.init)(jax.random.key(0), *model.init_inputs(32))['params']
  loss, metrics = jax.jit(lambda p, b: mass.loss_fn(p, b, None, model=model))(params, batch)
  logits = jax.jit(model.apply)({'params': params}, *(batch[k] for k in seq2seq.MODEL_INPUTS))
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['targets'][..., None], -1)[..., 0]
  w = batch['weights']
  np.testing.assert_allclose(loss, (nll * w).sum() / w.sum(), rtol=1e-5)
  # Untrained, near uniform over the vocabulary: the loss is close to ln(vocab).
  assert abs(float(loss) - np.log(TOKENIZER.vocab_size)) < 0.5
  assert float(metrics['loss'][1]) == w.sum() == mass.make_fragmenter(CFG, TOKENIZER, 0)(raw).sum()
  grads = jax.jit(jax.grad(lambda p: mass.loss_fn(p, batch, jax.random.key(1), model=model)[0]))(
    params
  )
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
