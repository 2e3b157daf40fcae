"""Head importance: |d loss / d head mask| of the objective's own loss, summed over
batches, equals central finite differences of that loss in each head's multiplier."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import head_pruning, heads, presets
from objectives import classification
from training import head_importance

VOCAB, LENGTH, BATCH, HEADS = 100, 16, 4, 4


def _batch(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  segment_ids = np.ones((BATCH, LENGTH), np.int32)
  segment_ids[1, 11:] = 0
  return {
    'inputs': rng.integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32),
    'segment_ids': segment_ids,
    'positions': np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH)).astype(np.int32),
    'token_types': (np.arange(LENGTH) >= 8).astype(np.int32)[None].repeat(BATCH, 0),
    'label': rng.integers(0, 3, BATCH).astype(np.float32),
    'example_id': np.arange(BATCH, dtype=np.int32),
  }


@pytest.fixture(scope='module')
def setup():
  """A 2-layer, 4-head classifier at 10x BERT's init scale (heads matter), its params,
  the classification objective and two batches."""
  cfg = presets.get_config(
    'bert-tiny', vocab_size=VOCAB, d_model=32, num_heads=HEADS, mlp_dim=64, max_len=LENGTH,
    init_std=0.2,
  )  # fmt: skip
  model = heads.SequenceClassifier(cfg, num_labels=3)
  batches = [_batch(1), _batch(2)]
  inputs = [jnp.asarray(batches[0][k]) for k in ('inputs', 'segment_ids', 'positions')]
  params = jax.device_get(nn.unbox(model.init(jax.random.key(0), *inputs)['params']))
  objective = classification.Classification(task='toy', num_labels=3)
  return cfg, model, params, objective, batches


def _finite_difference(model, params, loss_fn, batch, layer, head, base, eps=1e-2):
  """(L(xi_h = 1 + eps) - L(xi_h = 1 - eps)) / (2 eps) around the head multipliers `base`
  ({layer: [heads]}), the model applied with the collection directly."""

  def loss_at(value):
    masks = {
      f'block_{i}': {'attention': {'mask': jnp.asarray(m, jnp.float32).at[head].set(value)
                                   if i == layer else jnp.asarray(m, jnp.float32)}}
      for i, m in base.items()
    }  # fmt: skip

    class Direct:
      def apply(self, variables, *args, **kwargs):
        variables = {**variables, 'head_mask': {'encoder': masks}}
        return model.apply(variables, *args, **kwargs)

    return float(loss_fn(params, batch, None, model=Direct())[0])

  return (loss_at(1.0 + eps) - loss_at(1.0 - eps)) / (2 * eps)


def test_importance_equals_summed_absolute_finite_differences(setup):
  cfg, model, params, objective, batches = setup
  importance = head_importance.head_importance(model, params, batches, objective.loss_fn)
  assert importance.shape == (2, HEADS)
  expected, signs = np.zeros((2, HEADS)), np.zeros((2, 2, HEADS))
  for layer in range(2):
    for head in range(HEADS):
      for b, batch in enumerate(batches):
        ones = {0: [1.0] * HEADS, 1: [1.0] * HEADS}
        slope = _finite_difference(model, params, objective.loss_fn, batch, layer, head, ones)
        expected[layer, head] += abs(slope)
        signs[b, layer, head] = np.sign(slope)
  # Some heads' slopes change sign between the batches: |sum| would differ from sum |.|.
  assert (signs[0] != signs[1]).any()
  scale = expected.max()
  assert scale > 1e-3 and expected.min() < 0.8 * scale  # Heads differ: the order matters.
  np.testing.assert_allclose(importance, expected, rtol=0.02, atol=0.01 * scale)


def test_importance_of_a_pruned_model_marks_the_missing_heads(setup):
  cfg, model, params, objective, batches = setup
  pruned, pruned_cfg = head_pruning.remove_heads(params, cfg, {0: [0, 2], 1: [1]})
  pruned_model = heads.SequenceClassifier(pruned_cfg, num_labels=3)
  importance = head_importance.head_importance(pruned_model, pruned, batches[:1], objective.loss_fn)
  assert importance.shape == (2, 3)  # The widest layer has 3 heads now.
  assert np.isnan(importance[0, 2]) and not np.isnan(importance[:, :2]).any()
  # Layer 1's head 2 is the full model's head 3, whose importance with heads 0, 2 of
  # layer 0 and head 1 of layer 1 masked is the same: the pruned model computes what the
  # masked full model computes.
  masked = {0: [0.0, 1.0, 0.0, 1.0], 1: [1.0, 0.0, 1.0, 1.0]}
  slope = _finite_difference(model, params, objective.loss_fn, batches[0], 1, 3, masked)
  np.testing.assert_allclose(importance[1, 2], abs(slope), rtol=0.02, atol=1e-4)
  with pytest.raises(ValueError, match='at least one batch'):
    head_importance.head_importance(model, params, [], objective.loss_fn)
