"""Pool-based active learning: score a fine-tuned classifier's unlabelled pool and choose
which examples to label next (tools/active_learning.py runs the rounds).

Strategies, each choosing `k` of the unlabelled pool:
  random    uniformly, by the round's seed (the baseline).
  entropy   the highest predictive entropy H(p) (Lewis & Gale 1994's uncertainty sampling).
  margin    the smallest gap between the two most probable classes (Scheffer et al. 2001).
  bald      the highest mutual information between the prediction and the weights,
            H(mean_t p_t) - mean_t H(p_t) over T stochastic forward passes with dropout on
            (MC dropout: Gal & Ghahramani 2016; BALD: Houlsby et al. 2011, Gal et al. 2017).
  coreset   greedy k-centre on the encoder's [CLS] states (Sener & Savarese 2018): each pick
            is the unlabelled example farthest from its nearest labelled (or picked) one.
The score strategies take the k highest scores; ties go to the lower pool position, so a
choice is a function of the scores alone.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from evaluation import fine_tuned_classifier

STRATEGIES = ('random', 'entropy', 'margin', 'bald', 'coreset')


def entropy(probs: np.ndarray) -> np.ndarray:
  """H(p) in nats of [..., classes] probabilities -> [...]."""
  p = np.clip(probs, 1e-12, 1.0)
  return -(probs * np.log(p)).sum(-1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
  """-(p_first - p_second) per row of [n, classes]: higher is closer to the boundary."""
  top = np.sort(probs, axis=-1)
  return -(top[:, -1] - top[:, -2])


def bald_scores(sampled: np.ndarray) -> np.ndarray:
  """Mutual information of [samples, n, classes] dropout-sampled probabilities -> [n]."""
  return entropy(sampled.mean(0)) - entropy(sampled).mean(0)


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
  """The `k` candidates (pool positions) with the highest scores; ties: lower position."""
  order = np.lexsort((candidates, -scores[candidates]))  # Score descending, then position.
  return candidates[order[:k]]


def k_centre(features: np.ndarray, labelled: np.ndarray, candidates: np.ndarray, k: int):
  """Greedy k-centre: `k` candidates picked one by one, each the farthest (Euclidean) from
  its nearest labelled or already picked row of `features` [n, dim]; ties: lower position.
  With nothing labelled the first pick is the candidate farthest from the mean."""
  x = features.astype(np.float64)
  if len(labelled):
    centres = x[labelled]
  else:
    centres = x[candidates].mean(0, keepdims=True)
  # [candidates]: each candidate's distance to its nearest centre so far.
  nearest = np.sqrt(((x[candidates, None, :] - centres[None]) ** 2).sum(-1)).min(1)
  picked = []
  for _ in range(k):
    best = int(np.argmax(nearest))  # argmax takes the first of equal distances.
    picked.append(candidates[best])
    nearest = np.minimum(nearest, np.sqrt(((x[candidates] - x[candidates[best]]) ** 2).sum(-1)))
    nearest[best] = -1.0  # Picked: never again.
  return np.asarray(picked)


def choose(strategy: str, pool: dict, labelled: np.ndarray, k: int, seed: int) -> np.ndarray:
  """The `k` pool positions to label next.

  Args:
    strategy: one of STRATEGIES.
    pool: score_pool's arrays over the whole pool.
    labelled: the pool positions already labelled.
    k: how many to choose (at most the unlabelled count).
    seed: the random strategy's draw.

  Raises:
    ValueError: an unknown strategy, or k larger than what is left unlabelled.
  """
  n = len(pool['probs'])
  candidates = np.setdiff1d(np.arange(n), labelled)
  if k > len(candidates):
    raise ValueError(f'{k} examples to label, but only {len(candidates)} are left in the pool.')
  if strategy == 'random':
    return np.sort(np.random.default_rng(seed).choice(candidates, size=k, replace=False))
  if strategy == 'coreset':
    return k_centre(pool['features'], np.asarray(labelled, int), candidates, k)
  if strategy == 'entropy':
    scores = entropy(pool['probs'])
  elif strategy == 'margin':
    scores = margin_scores(pool['probs'])
  elif strategy == 'bald':
    scores = bald_scores(pool['sampled'])
  else:
    raise ValueError(f'strategy {strategy!r} is not one of {STRATEGIES}.')
  return top_k(scores, candidates, k)


@functools.partial(jax.jit, static_argnames=('model', 'samples'))
def _pool_outputs(params, inputs, rng, *, model, samples: int):
  """(probs [batch, classes], dropout-sampled probs [samples, batch, classes], [CLS] states
  [batch, embed]) of one batch of rows."""
  variables = {'params': params}
  logits = model.apply(variables, *inputs, deterministic=True)

  def sampled(key):
    out = model.apply(variables, *inputs, deterministic=False, rngs={'dropout': key})
    return jax.nn.softmax(out, axis=-1)

  mc = jax.vmap(sampled)(jax.random.split(rng, samples)) if samples else logits[None, :, :0]
  cls = model.apply(variables, *inputs, True, method=lambda m, *a: m.encoder(*a)[:, 0])
  return jax.nn.softmax(logits, axis=-1), mc, cls.astype(jnp.float32)


def score_pool(classifier, rows: dict, samples: int, seed: int, batch_size: int = 32) -> dict:
  """Everything a strategy reads about the pool, from one pass over it.

  Args:
    classifier: a fine_tuned_classifier.Classifier.
    rows: the pool's rows (Classifier.rows), [n, length] each.
    samples: MC-dropout passes for bald (T); 0 skips them (the other strategies).
    seed: the dropout masks' seed (batch b uses fold_in(key(seed), b)).
    batch_size: rows per compiled forward pass.

  Returns:
    {'probs': [n, classes], 'sampled': [samples, n, classes] ([1, n, 0] without samples),
    'features': [n, embed]}.
  """
  key = jax.random.key(seed)
  outputs = fine_tuned_classifier.in_batches(
    lambda b, inputs: _pool_outputs(
      classifier.params,
      inputs,
      jax.random.fold_in(key, b),
      model=classifier.model,
      samples=samples,
    ),  # fmt: skip
    rows,
    batch_size,
    batch_axes=(0, 1, 0),
  )
  probs, sampled, features = outputs
  return {'probs': probs, 'sampled': sampled, 'features': features}
