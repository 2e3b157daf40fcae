"""Active learning's query strategies (evaluation/active_learning.py): each picks the
argmax of its score among the unlabelled, BALD's mutual information and k-centre's
greedy picks against hand computations, and the pool scores of a real classifier."""

import jax
import numpy as np
import pytest

from evaluation import active_learning, fine_tuned_classifier
from models import heads
from models.transformer_config import TransformerConfig


def _pool(probs, sampled=None, features=None) -> dict:
  probs = np.asarray(probs, np.float64)
  return {
    'probs': probs,
    'sampled': probs[None] if sampled is None else np.asarray(sampled),
    'features': np.zeros((len(probs), 2)) if features is None else np.asarray(features, float),
  }


def test_entropy_and_margin_pick_the_most_uncertain_unlabelled():
  probs = [[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01], [0.45, 0.55], [0.7, 0.3]]
  pool = _pool(probs)
  # Row 1 (0.5/0.5) is the most uncertain but labelled: the next two are 4 and 2.
  assert active_learning.choose('entropy', pool, [1], 2, seed=0).tolist() == [4, 2]
  assert active_learning.choose('margin', pool, [1], 2, seed=0).tolist() == [4, 2]
  h = -(np.asarray(probs) * np.log(probs)).sum(-1)
  np.testing.assert_allclose(active_learning.entropy(pool['probs']), h, rtol=1e-12)


def test_margin_differs_from_entropy_with_three_classes():
  # Entropy prefers the spread row 0; the margin the near tie of the top two in row 1.
  probs = [[0.4, 0.3, 0.3], [0.48, 0.47, 0.05], [0.8, 0.1, 0.1]]
  pool = _pool(probs)
  assert active_learning.choose('entropy', pool, [], 1, seed=0).tolist() == [0]
  assert active_learning.choose('margin', pool, [], 1, seed=0).tolist() == [1]


def test_ties_go_to_the_lower_position():
  pool = _pool([[0.5, 0.5]] * 5)
  assert active_learning.choose('entropy', pool, [0, 3], 2, seed=0).tolist() == [1, 2]


def test_bald_is_the_mutual_information_by_hand():
  # Example 0: the samples disagree confidently (BALD's pick, mean 0.55 / 0.45); example 1:
  # they agree on 50/50 (entropy's pick, zero BALD); example 2: they agree confidently.
  sampled = np.asarray([
    [[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]],
    [[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]],
  ])  # fmt: skip
  mean = sampled.mean(0)
  by_hand = [
    -(mean[i] * np.log(mean[i])).sum()
    + np.mean([(sampled[t, i] * np.log(sampled[t, i])).sum() for t in range(2)])
    for i in range(3)
  ]
  scores = active_learning.bald_scores(sampled)
  np.testing.assert_allclose(scores, by_hand, rtol=1e-12)
  assert scores[1] == pytest.approx(0.0, abs=1e-12) and scores[0] > 0.2
  pool = _pool(mean, sampled=sampled)
  assert active_learning.choose('bald', pool, [], 1, seed=0).tolist() == [0]
  assert active_learning.choose('entropy', pool, [], 1, seed=0).tolist() == [1]


def test_k_centre_picks_the_farthest_from_the_labelled_greedily():
  # Labelled: the origin. Candidates on a line: 10 is farthest; then 4 (6 from 10 and 4
  # from 0, against 5's 5 and 5: 5 wins); then whichever is farthest from {0, 10, 5}.
  x = np.asarray([[0.0], [1.0], [4.0], [5.0], [10.0], [8.0]])
  pool = _pool(np.full((6, 2), 0.5), features=x)
  picked = active_learning.choose('coreset', pool, [0], 3, seed=0).tolist()
  assert picked[:2] == [4, 3]
  # Distances to {0, 10, 5}: 1 -> 1, 4 -> 1, 8 -> 2: row 5 (8.0) next.
  assert picked[2] == 5
  assert len(set(picked)) == 3 and 0 not in picked


def test_random_is_a_seeded_draw_of_the_unlabelled():
  pool = _pool(np.full((50, 2), 0.5))
  a = active_learning.choose('random', pool, list(range(10)), 8, seed=3)
  assert a.tolist() == active_learning.choose('random', pool, list(range(10)), 8, seed=3).tolist()
  assert a.tolist() != active_learning.choose('random', pool, list(range(10)), 8, seed=4).tolist()
  assert len(set(a.tolist())) == 8 and min(a) >= 10


def test_choose_rejects_too_many_and_unknown():
  pool = _pool(np.full((4, 2), 0.5))
  with pytest.raises(ValueError, match='only 2 are left'):
    active_learning.choose('entropy', pool, [0, 1], 3, seed=0)
  with pytest.raises(ValueError, match="'lc' is not one of"):
    active_learning.choose('lc', pool, [], 1, seed=0)


class _Classifier:
  def __init__(self, model, params):
    self.model, self.params = model, params


def test_score_pool_matches_the_classifier_and_samples_dropout():
  cfg = TransformerConfig(
    vocab_size=50, num_layers=1, d_model=16, num_heads=2, mlp_dim=32, max_len=16,
    dropout_rate=0.3,
  )  # fmt: skip
  model = heads.SequenceClassifier(cfg, 3)
  rng = np.random.default_rng(0)
  n, length = 7, 8
  rows = {
    'tokens': rng.integers(1, 50, (n, length)).astype(np.int32),
    'segment_ids': np.ones((n, length), np.int32),
    'positions': np.tile(np.arange(length, dtype=np.int32), (n, 1)),
    'token_types': np.zeros((n, length), np.int32),
  }
  inputs = tuple(rows[k] for k in fine_tuned_classifier.INPUTS)
  params = model.init(jax.random.key(0), *inputs)['params']
  pool = active_learning.score_pool(
    _Classifier(model, params), rows, samples=4, seed=0, batch_size=3
  )
  logits = model.apply({'params': params}, *inputs, deterministic=True)
  np.testing.assert_allclose(pool['probs'], jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)
  assert pool['sampled'].shape == (4, n, 3) and pool['features'].shape == (n, 16)
  np.testing.assert_allclose(pool['sampled'].sum(-1), 1.0, rtol=1e-5)
  assert np.abs(pool['sampled'][0] - pool['sampled'][1]).max() > 1e-4  # Dropout is on.
  assert np.abs(pool['sampled'][0] - pool['probs']).max() > 1e-4
  cls = model.apply({'params': params}, *inputs, True, method=lambda m, *a: m.encoder(*a)[:, 0])
  np.testing.assert_allclose(pool['features'], cls, rtol=1e-5, atol=1e-6)
  again = active_learning.score_pool(
    _Classifier(model, params), rows, samples=4, seed=0, batch_size=3
  )
  np.testing.assert_array_equal(pool['sampled'], again['sampled'])  # Seeded masks.
  # Without samples (every strategy but BALD) the rest is the same, the samples empty.
  bare = active_learning.score_pool(
    _Classifier(model, params), rows, samples=0, seed=0, batch_size=3
  )
  np.testing.assert_array_equal(bare['probs'], pool['probs'])
  np.testing.assert_array_equal(bare['features'], pool['features'])
  assert bare['sampled'].size == 0
