"""word2vec's negative sampling (Mikolov et al. 2013), for skip-gram and CBOW.

Host side, vectorized over the batch, every draw a function of (seed, epoch,
example id, position) (data/host_random.py):

  1. Words. Special tokens (the BOS / EOS framing, [UNK], ...) are not words.
     With `objective.subsample` = t > 0, a word of frequency f is kept with
     probability sqrt(t / f) (the paper's subsampling of frequent words). The
     kept words are moved to the front of their row, in order (as word2vec.c
     drops discarded words from the sentence before windowing); `inputs`,
     `segment_ids` and `positions` describe those compacted rows.
  2. Windows. Each center word draws b uniformly from 1..`objective.window`; its
     context is the words at most b places away in its own segment (`contexts`
     [batch, length, 2 * window], `context_weights` 1 where a slot holds one).
  3. Noise. `objective.negatives` = K noise words per (center, context slot),
     drawn from the unigram distribution raised to `objective.noise_power`
     (3/4): `negatives` [batch, length, 2 * window, K]. CBOW uses slot 0's.

Unigram frequencies come from the tokenizer: the piece probabilities of a
SentencePiece unigram model (the default tokenizer, trained on the same corpus),
which is what its EM estimates. Counting the training documents instead would
need the documents in `make_preprocess`; other tokenizers are refused.

Jitted side: the logistic loss of each positive pair and its K noise words,
-log sigmoid(u_o . v_c) - sum_k log sigmoid(-u_k . v_c), averaged over the
positive pairs (skip-gram) or the centers with a context (CBOW). A noise word
equal to the word being predicted is skipped, as in word2vec.c. `accuracy` is
the fraction of predictions whose positive pair outscores all its noise words.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from data import host_random
from models import word2vec

# Segments are framed as BOS tokens EOS by the packer; the framing is not a word.
FRAMING = ('bos_id', 'eos_id')
# `python -m tools.show` renders the (subsampled) segments with their count of centers
# that have a context ('predicted positions'), then a few centers, contexts and noise.
SHOW = 'pairs'


# Keys this objective adds to config.objective (configs/cpu/word2vec.py sets them).


def config() -> config_dict.ConfigDict:
  """word2vec's keys (Mikolov et al. 2013)."""
  c = config_dict.ConfigDict()
  c.window = 5  # Largest window b: each center draws b from 1..window.
  c.negatives = 5  # Noise words per positive pair (K).
  c.subsample = 1e-3  # Keep a word of frequency f with p = sqrt(t / f); 0: off.
  c.noise_power = 0.75  # Noise distribution: unigram ** noise_power.
  return c


def build_model(model_cfg):
  """The model this objective trains: input and output vectors, scored in pairs."""
  return word2vec.Word2Vec(model_cfg)


def unigram_frequencies(tokenizer) -> np.ndarray:
  """[vocab] float64 unigram probabilities of the pieces; 0 for the special ids.

  Read from a SentencePiece unigram model's piece scores (log probabilities), or
  from the tokenizer's own `unigram_frequencies()` where it has one (counts from
  elsewhere, a benchmark's synthetic vocabulary).

  Raises:
    ValueError: for tokenizers that carry no piece probabilities.
  """
  from sentencepiece import sentencepiece_model_pb2  # Only this objective needs the proto.

  if hasattr(tokenizer, 'unigram_frequencies'):
    frequencies = np.asarray(tokenizer.unigram_frequencies(), np.float64)
    frequencies[np.asarray(tokenizer.special_ids)] = 0.0
    return frequencies / frequencies.sum()
  path = getattr(tokenizer, 'path', '')
  proto = sentencepiece_model_pb2.ModelProto()
  if path.endswith('.model'):
    with open(path, 'rb') as f:
      proto.ParseFromString(f.read())
  if not path.endswith('.model') or proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM:
    raise ValueError(
      f'objectives.word2vec draws noise words from unigram frequencies, read from a '
      f'SentencePiece unigram model; tokenizer {path!r} is not one. Leave '
      f'data.tokenizer_path empty to train one, or point it at a unigram .model file.'
    )
  normal = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
  scores = np.array([p.score for p in proto.pieces], np.float64)
  frequencies = np.where([p.type == normal for p in proto.pieces], np.exp(scores), 0.0)
  frequencies[np.asarray(tokenizer.special_ids)] = 0.0
  return frequencies / frequencies.sum()


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(batch) -> batch` with context windows and noise words."""
  return pair_preprocess(objective_cfg, unigram_frequencies(tokenizer), seed)


def pair_preprocess(objective_cfg, frequencies: np.ndarray, seed: int):
  """`make_preprocess` given the unigram `frequencies` [vocab] (0: not a word).

  Args:
    objective_cfg: window, negatives, subsample and noise_power.
    frequencies: unigram probabilities of the ids; ids with 0 are never words.
    seed: the run's seed.
  """
  window, negatives = objective_cfg.window, objective_cfg.negatives
  subsample, power = objective_cfg.subsample, objective_cfg.noise_power
  if window < 1 or negatives < 1:
    raise ValueError(f'objective.window={window} and negatives={negatives} must be >= 1.')
  if subsample < 0:
    raise ValueError(f'objective.subsample={subsample} must be >= 0 (0 disables it).')
  frequencies = np.asarray(frequencies, np.float64)
  noise = frequencies**power
  noise_cdf = np.cumsum(noise / noise.sum())  # [vocab]
  offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])  # [slots]
  slots = len(offsets)

  def preprocess(batch: dict) -> dict:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    rows, length = tokens.shape
    draw = functools.partial(host_random.uniform, seed, batch['epoch'], batch['example_id'])
    frequency = frequencies[tokens]
    words = (segment_ids > 0) & (frequency > 0)
    if subsample > 0:
      keep = np.sqrt(subsample / np.maximum(frequency, 1e-300))
      words &= draw(length, 0) < keep
    order = np.argsort(~words, axis=1, kind='stable')  # Kept words first, in order.
    words = np.take_along_axis(words, order, axis=1)
    compact = lambda a: np.where(words, np.take_along_axis(a, order, axis=1), 0)  # noqa: E731
    tokens, segment_ids = compact(tokens), compact(segment_ids)

    reach = 1 + np.minimum((draw(length, 1) * window).astype(np.int64), window - 1)
    where = np.arange(length)[:, None] + offsets  # [length, slots]
    inside = (where >= 0) & (where < length)
    where = np.clip(where, 0, length - 1)
    row = np.arange(rows)[:, None, None]
    valid = inside & (np.abs(offsets) <= reach[..., None])  # [batch, length, slots]
    valid &= (segment_ids[row, where] == segment_ids[..., None]) & words[..., None]
    contexts = np.where(valid, tokens[row, where], 0)

    u = draw(length * slots * negatives, 2).reshape(rows, length, slots, negatives)
    noise_ids = np.searchsorted(noise_cdf, u * noise_cdf[-1], side='right')
    noise_ids = np.minimum(noise_ids, len(noise_cdf) - 1)
    return {
      'inputs': tokens.astype(np.int32),
      'targets': tokens.astype(np.int32),  # CBOW predicts the center itself.
      'weights': valid.any(axis=-1).astype(np.float32),  # Centers with a context.
      'contexts': contexts.astype(np.int32),
      'context_weights': valid.astype(np.float32),
      'negatives': noise_ids.astype(np.int32),
      'segment_ids': segment_ids.astype(np.int32),
      'positions': compact(batch['positions']).astype(np.int32),
    }

  return preprocess


def negative_sampling_loss(positive, negative, noise_mask, weights):
  """Mean logistic loss of positive pairs against their noise words.

  Args:
    positive: [...] scores of the positive pairs.
    negative: [..., K] scores of each pair's noise words.
    noise_mask: [..., K] 1 where a noise word counts (it differs from the positive).
    weights: [...] 1 where a positive pair counts.

  Returns:
    (loss, metrics): the weighted mean; `loss` and `accuracy` as (sum, weight).
  """
  positive, negative = positive.astype(jnp.float32), negative.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  noise_mask = noise_mask.astype(jnp.float32) * weights[..., None]
  per_pair = -jax.nn.log_sigmoid(positive) * weights
  per_pair += jnp.sum(-jax.nn.log_sigmoid(-negative) * noise_mask, axis=-1)
  total, loss_sum = jnp.sum(weights), jnp.sum(per_pair)
  beats = jnp.all((positive[..., None] > negative) | (noise_mask == 0), axis=-1)
  correct = jnp.sum(beats * weights)
  loss = loss_sum / jnp.where(total > 0, total, 1.0)
  return loss, {'loss': (loss_sum, total), 'accuracy': (correct, total)}


def loss_fn(params, batch, rng, *, model):
  """The negative-sampling loss of the model's mode; word2vec has no dropout."""
  del rng
  positive, negative = model.apply(
    {'params': params},
    batch['inputs'],
    batch['contexts'],
    batch['context_weights'],
    batch['negatives'],
  )
  if model.cfg.mode == 'skipgram':  # One prediction per (center, context slot).
    predicted, noise, weights = batch['contexts'], batch['negatives'], batch['context_weights']
  else:  # One prediction per center: its own id, from the context average.
    predicted, noise = batch['inputs'], batch['negatives'][:, :, 0]
    weights = jnp.max(batch['context_weights'], axis=-1)
  return negative_sampling_loss(positive, negative, noise != predicted[..., None], weights)


def eval_summary(values: dict[str, float]) -> dict[str, float]:
  """Nothing to derive: the loss and accuracy are the figures."""
  return dict(values)
