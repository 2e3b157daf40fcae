"""Tests of objectives/elmo_lm.py."""

import functools
import math
from types import SimpleNamespace

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import elmo
from objectives import elmo_lm
from tests.models.test_elmo import random_params
from tests.objectives.test_clm import B, E, _packed_batch  # The same packed rows.

VOCAB = 40
PIECES = ['<pad>', '<unk>', '<s>', '</s>'] + [f'▁w{i}' for i in range(4, VOCAB)]
TOKENIZER = SimpleNamespace(
  vocab_size=VOCAB, pad_id=0, bos_id=B, eos_id=E, id_to_piece=lambda i: PIECES[i]
)


def test_targets_weights_and_characters():
  batch = _packed_batch()
  out = elmo_lm.make_preprocess(None, TOKENIZER, seed=0)(batch)
  tokens = batch['tokens']
  np.testing.assert_array_equal(out['inputs'], tokens)
  forward = np.array([[1, 1, 1, 0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 1, 1, 0]], np.float32)
  backward = np.array([[0, 1, 1, 1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 0, 1, 1]], np.float32)
  np.testing.assert_array_equal(out['weights'], forward)
  np.testing.assert_array_equal(out['backward_weights'], backward)
  # Forward predicts the next token, backward the previous one, inside one segment.
  rows, cols = np.nonzero(forward)
  np.testing.assert_array_equal(out['targets'][rows, cols], tokens[rows, cols + 1])
  rows, cols = np.nonzero(backward)
  np.testing.assert_array_equal(out['backward_targets'][rows, cols], tokens[rows, cols - 1])
  assert not (out['targets'][forward > 0] == B).any()  # Never predicts a BOS ...
  assert not (out['backward_targets'][backward > 0] == E).any()  # ... nor, backward, an EOS.
  table = elmo.char_table(TOKENIZER)
  np.testing.assert_array_equal(out['chars'], table[tokens])
  assert out['chars'].shape == (2, 9, table.shape[1])
  for name in ('inputs', 'targets', 'backward_targets', 'segment_ids', 'positions', 'chars'):
    assert out[name].dtype == np.int32, name
  assert all(v.shape[0] == 2 for v in out.values())  # Global batch first (sharded on data).


@functools.cache
def _setup():
  cfg = elmo.ElmoConfig(**dict(elmo.PRESETS['elmo-tiny'], vocab_size=VOCAB))
  model = elmo_lm.build_model(cfg)
  batch = elmo_lm.make_preprocess(None, TOKENIZER, seed=0)(_packed_batch())
  params = random_params(model, batch['chars'], batch['segment_ids'])
  return model, batch, nn.unbox(params)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_matches_a_numpy_reference_under_jit():
  model, batch, params = _setup()

  def loss_and_logits(p, b):
    return elmo_lm.loss_fn(p, b, None, model=model), model.apply(
      {'params': p}, b['chars'], b['segment_ids']
    )

  (loss, m), logits = jax.jit(loss_and_logits)(params, batch)
  nll = {}
  for name, out, targets, weights in (
    ('forward', logits[0], batch['targets'], batch['weights']),
    ('backward', logits[1], batch['backward_targets'], batch['backward_weights']),
  ):
    log_probs = _log_softmax(np.asarray(out, np.float64))
    picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    nll[name] = -(picked * weights).sum()
  assert float(m['forward_loss'][1]) == float(m['backward_loss'][1]) == 12.0
  np.testing.assert_allclose(float(m['forward_loss'][0]), nll['forward'], rtol=1e-5)
  np.testing.assert_allclose(float(m['backward_loss'][0]), nll['backward'], rtol=1e-5)
  np.testing.assert_allclose(float(loss), (nll['forward'] + nll['backward']) / 24, rtol=1e-5)
  assert float(m['loss'][1]) == 24.0


def test_uniform_softmax_gives_log_vocab_and_finite_gradients():
  model, batch, params = _setup()
  loss_and_grad = jax.jit(
    jax.value_and_grad(lambda p, b, r: elmo_lm.loss_fn(p, b, r, model=model), has_aux=True)
  )
  rng = jax.random.key(1)  # Training mode: dropout on.
  # A zero softmax layer predicts uniformly, whatever the dropout: the loss is ln(VOCAB).
  zeroed = {**params, 'softmax': jax.tree.map(jnp.zeros_like, params['softmax'])}
  (loss, m), _ = loss_and_grad(zeroed, batch, rng)
  np.testing.assert_allclose(float(loss), math.log(VOCAB), rtol=1e-6)
  assert float(m['accuracy'][0]) == 0.0  # argmax of equal logits is id 0, never a target.
  (loss, _), grads = loss_and_grad(params, batch, rng)
  leaves = jax.tree.leaves(grads)
  assert np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in leaves)
  char_grad = grads['bilm']['char_encoder']['char_embed']['embedding']
  assert float(jnp.abs(char_grad).sum()) > 0  # Gradients reach the characters.
  # Targets at ignored positions do not matter.
  other = {
    **batch,
    'targets': np.where(batch['weights'] == 0, 7, batch['targets']),
    'backward_targets': np.where(batch['backward_weights'] == 0, 7, batch['backward_targets']),
  }
  assert float(loss_and_grad(params, other, rng)[0][0]) == float(loss)


def test_eval_summary_perplexities():
  values = elmo_lm.eval_summary({'loss': 2.0, 'forward_loss': 1.0, 'backward_loss': 3.0})
  assert values['perplexity'] == math.exp(2.0)
  assert values['forward_perplexity'] == math.exp(1.0)
  assert values['backward_perplexity'] == math.exp(3.0)
