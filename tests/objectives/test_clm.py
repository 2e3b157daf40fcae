"""Tests of objectives/clm.py."""

import jax
import jax.numpy as jnp
import numpy as np

from models import heads, presets
from objectives import clm

B, E = 2, 3  # BOS / EOS framing ids.


def _packed_batch():
  tokens = np.array(
    [
      [B, 10, 11, E, B, 20, E, 0, 0],  # Two documents, then padding.
      [B, 30, 31, 32, 33, E, B, 35, E],  # Full row: the last token has no next one.
    ],
    np.int32,
  )
  segment_ids = np.array([[1, 1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 2, 2, 2]], np.int32)
  positions = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 0], [0, 1, 2, 3, 4, 5, 0, 1, 2]], np.int32)
  return {
    'tokens': tokens,
    'segment_ids': segment_ids,
    'positions': positions,
    'epoch': np.zeros(2, np.int64),
    'example_id': np.arange(2, dtype=np.int64),
  }


def test_clm_targets_and_weights():
  batch = _packed_batch()
  out = clm.make_preprocess(None, None, seed=0)(batch)
  np.testing.assert_array_equal(out['inputs'], batch['tokens'])
  # Position i predicts token i + 1 of its own segment; a segment's last token
  # (EOS), padding and the row's last position predict nothing (weight 0).
  np.testing.assert_array_equal(
    out['weights'],
    np.array([[1, 1, 1, 0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 1, 1, 0]], np.float32),
  )
  counted = out['weights'] > 0
  expected_targets = np.array(
    [[10, 11, E, B, 20, E, 0, 0, 0], [30, 31, 32, 33, E, B, 35, E, 0]], np.int32
  )
  np.testing.assert_array_equal(out['targets'][counted], expected_targets[counted])
  # No counted prediction crosses a segment boundary or predicts a BOS.
  assert not (out['targets'][counted] == B).any()
  assert out['weights'].dtype == np.float32
  assert all(out[k].dtype == np.int32 for k in ('inputs', 'targets', 'segment_ids', 'positions'))
  np.testing.assert_array_equal(out['segment_ids'], batch['segment_ids'])
  np.testing.assert_array_equal(out['positions'], batch['positions'])


def test_clm_loss_gradients():
  cfg = presets.get_config('gpt2-tiny', vocab_size=64, max_len=64)
  model = clm.build_model(cfg)
  assert isinstance(model, heads.CausalLM)
  batch = clm.make_preprocess(None, None, seed=0)(_packed_batch())
  tokens = jnp.ones((1, 16), jnp.int32)  # The init shape of tests/models: cached compiles.
  params = model.init(jax.random.key(0), tokens, tokens)['params']
  loss_and_grad = jax.jit(
    jax.value_and_grad(lambda p, b: clm.loss_fn(p, b, None, model=model), has_aux=True)
  )
  (loss, m), grads = loss_and_grad(params, batch)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  assert float(m['loss'][1]) == 12.0
  assert np.isfinite(float(loss))
  # An untrained model is close to uniform over the vocabulary.
  assert abs(float(loss) - np.log(64)) < 0.5
  ignored = batch['weights'] == 0
  other = {**batch, 'targets': np.where(ignored, 7, batch['targets'])}
  assert float(loss_and_grad(params, other)[0][0]) == float(loss)
