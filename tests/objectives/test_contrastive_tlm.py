"""XLM's TLM and the contrastive translation-ranking loss: hand-computed references."""

import types

import jax
import jax.numpy as jnp
import numpy as np

from models import presets
from objectives import api, contrastive, tlm
from tests.objective_config import objective_config

VOCAB = 64
TOKENIZER = types.SimpleNamespace(
  special_ids=np.arange(5), vocab_size=VOCAB, mask_id=4, cls_id=2, sep_id=3
)


def _cfg(**keys):
  base = dict(mask_rate=0.15, mask_token_rate=0.8, random_token_rate=0.1, max_pairs=2)
  return objective_config(**{**base, **keys})


def test_contrastive_loss_matches_a_numpy_infonce():
  rng = np.random.default_rng(0)
  states = rng.normal(size=(2, 12, 8)).astype(np.float32)
  # Row 0: pairs (1, 2) and (3, 4); row 1: one pair (1, 2) and padding.
  segment_ids = np.array(
    [[1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 0], [1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0]]
  )
  cfg = _cfg(temperature=0.1)
  loss, metrics = jax.jit(lambda s, b: contrastive.aux_loss(s, b, cfg))(
    states, {'segment_ids': segment_ids}
  )

  def mean(row, segment):
    return states[row][segment_ids[row] == segment].mean(0)

  sources = np.stack([mean(0, 1), mean(0, 3), mean(1, 1)])
  targets = np.stack([mean(0, 2), mean(0, 4), mean(1, 2)])
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  scores = unit(sources) @ unit(targets).T / 0.1
  log_rows = scores - np.log(np.exp(scores).sum(1, keepdims=True))
  log_cols = scores - np.log(np.exp(scores).sum(0, keepdims=True))
  expected = -0.5 * (np.diag(log_rows) + np.diag(log_cols)).mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(metrics['loss'][1]) == 3.0  # Three real pairs; row 1's second slot is empty.
  grads = jax.grad(lambda s: contrastive.aux_loss(s, {'segment_ids': segment_ids}, cfg)[0])(
    jnp.asarray(states)
  )
  assert bool(jnp.all(jnp.isfinite(grads))) and float(jnp.abs(grads[1, 5:]).sum()) == 0.0


def test_tlm_masks_both_sides_and_feeds_languages_as_token_types():
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, VOCAB, (256, 64)).astype(np.int32)
  token_types = (np.arange(64) >= 32).astype(np.int32)[None].repeat(256, 0)
  tokens[:, [0, 31, 63]] = [2, 3, 3]
  rows = {
    'tokens': tokens,
    'token_types': token_types,
    'segment_ids': np.ones((256, 64), np.int32),
    'positions': np.concatenate([np.arange(32), np.arange(32)])[None].repeat(256, 0),
    'epoch': np.zeros(256, np.int64),
    'example_id': np.arange(256),
  }
  batch = tlm.make_preprocess(_cfg(), TOKENIZER, seed=0)(rows)
  np.testing.assert_array_equal(batch['token_types'], token_types)
  for side in (token_types == 0, token_types == 1):
    rate = batch['weights'][side & (tokens > 4)].mean()
    assert abs(rate - 0.15) < 5 * np.sqrt(0.15 * 0.85 / side.sum())
  assert not batch['weights'][:, [0, 31, 63]].any()

  # The loss under jit is the masked cross-entropy of the model fed the language ids.
  objective = api.load('objectives.tlm', _cfg())
  model = objective.build_model(
    presets.get_config(
      'bert-tiny', vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, mlp_dim=64
    )
  )
  small = {k: v[:4] for k, v in batch.items()}
  params = model.init(jax.random.key(0), *(small[k] for k in tlm.MODEL_INPUTS))['params']
  loss, _ = jax.jit(lambda p, b: objective.loss_fn(p, b, None, model=model))(params, small)
  logits = model.apply({'params': params}, *(small[k] for k in tlm.MODEL_INPUTS))
  logp = np.asarray(jax.nn.log_softmax(logits))
  picked = np.take_along_axis(logp, small['targets'][..., None], -1)[..., 0]
  expected = -(picked * small['weights']).sum() / small['weights'].sum()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  other = model.apply(
    {'params': params}, *(small[k] for k in tlm.MODEL_INPUTS[:3]), 1 - small['token_types']
  )
  assert not np.allclose(other, logits)  # The language ids reach the model.
