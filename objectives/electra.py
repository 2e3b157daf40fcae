"""ELECTRA's replaced token detection (Clark et al. 2020), generator and discriminator
trained jointly.

Host side: MLM's corruption (objectives/mlm.py `make_masker`, reused as is); ELECTRA's
code masks 15% of the tokens, 85% of them to [MASK] and the rest kept, no random
tokens (configs/cpu/electra.py sets those rates).

Jitted side (`loss_fn`), per batch:
  1. the generator (models/electra.py) predicts the masked tokens: MLM cross-entropy
     over the masked positions;
  2. at every masked position a token is drawn from the generator's softmax
     (Gumbel-max on the stop-gradient logits: no gradient flows through sampling);
     the other positions keep the original token;
  3. the discriminator labels every non-padding token: replaced iff the token it sees
     differs from the original, so a masked token the generator got right counts as
     original, as in ELECTRA; sigmoid cross-entropy averaged over all non-padding
     tokens ([CLS] and [SEP] included).
  loss = MLM + rtd_weight x RTD, rtd_weight = 50 as in the paper.

Config keys (`config()`): objective.generator_fraction (0.25: the generator's width,
heads and MLP as a fraction of the discriminator's; the paper's best small-model
setting) and objective.rtd_weight (50).

Randomness: with `rng`, generator dropout, sampling and discriminator dropout use
keys folded from it; in evaluation (`rng=None`) there is no dropout and sampling uses
a fixed key, so an evaluation is deterministic.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import optax
from ml_collections import config_dict

from models import electra as electra_model
from objectives import mlm
from objectives.shared import metrics, token_lm

# Key of the samples drawn in evaluation (rng=None), fixed so that evaluations repeat.
_EVAL_KEY = 0


def config() -> config_dict.ConfigDict:
  """ELECTRA's keys."""
  c = config_dict.ConfigDict()
  c.generator_fraction = 0.25  # Generator width, heads, MLP: a fraction of the discriminator's.
  c.rtd_weight = 50.0  # Weight of the replaced token detection loss (lambda).
  return c


def sample_tokens(logits: jax.Array, key: jax.Array) -> jax.Array:
  """One token per position drawn from softmax(logits): Gumbel-max, without gradient.

  Args:
    logits: [..., vocab] generator logits.
    key: a PRNG key.

  Returns:
    [...] int32 token ids.
  """
  logits = jax.lax.stop_gradient(logits).astype(jnp.float32)
  return jnp.argmax(logits + jax.random.gumbel(key, logits.shape), axis=-1).astype(jnp.int32)


def replaced_token_loss(logits, replaced, weights) -> tuple[jax.Array, metrics.Metrics]:
  """Mean sigmoid cross-entropy of "replaced?" over the weighted tokens.

  Args:
    logits: [batch, length] discriminator logits.
    replaced: [batch, length] bool labels.
    weights: [batch, length] 1 for the tokens that count (all non-padding ones).

  Returns:
    (loss, metrics): `rtd_loss`, `rtd_accuracy` and `replaced_fraction` (the share of
    replaced tokens: 1 minus it is the accuracy of always answering "original").
  """
  logits = logits.astype(jnp.float32)
  labels, weights = replaced.astype(jnp.float32), weights.astype(jnp.float32)
  total = jnp.sum(weights)
  loss_sum = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels) * weights)
  correct = jnp.sum(((logits > 0) == replaced) * weights)
  loss = loss_sum / jnp.where(total > 0, total, 1.0)
  return loss, {
    'rtd_loss': (loss_sum, total),
    'rtd_accuracy': (correct, total),
    'replaced_fraction': (jnp.sum(labels * weights), total),
  }


def forward(params, batch, rng, *, model) -> dict:
  """Generator, sampling and discriminator of one batch (what `loss_fn` scores).

  Returns:
    {'generator_logits': [batch, P, vocab] at the P gathered masked positions (or
    [batch, length, vocab] without them), 'sampled': [batch, P or length] draws
    from the generator, 'corrupted': the discriminator's input (the draws at the
    masked positions, the original tokens elsewhere), 'replaced': corrupted !=
    original, 'discriminator_logits': [batch, length]}.
  """
  train = rng is not None
  key = rng if train else jax.random.key(_EVAL_KEY)
  generator_key, sample_key, discriminator_key = (jax.random.fold_in(key, i) for i in range(3))
  apply = functools.partial(model.apply, {'params': params}, deterministic=not train)
  rest = (batch['segment_ids'], batch['positions'])
  gathered, _, masked_weights = token_lm.predictions(batch)  # MLM's masked positions.
  generator_logits = apply(
    batch['inputs'],
    *rest,
    method='generate',
    rngs={'dropout': generator_key} if train else None,
    **gathered,
  )
  sampled = sample_tokens(generator_logits, sample_key)  # [batch, P or length]
  originals = batch['targets']
  if gathered:  # The draws go back to their positions; empty slots are dropped.
    length = originals.shape[1]
    index = jnp.where(masked_weights > 0, batch['masked_positions'], length)
    rows = jnp.arange(originals.shape[0])[:, None]
    corrupted = originals.at[rows, index].set(sampled, mode='drop')
  else:
    corrupted = jnp.where(batch['weights'] > 0, sampled, originals)
  discriminator_logits = apply(
    corrupted, *rest, method='discriminate', rngs={'dropout': discriminator_key} if train else None
  )
  return {
    'generator_logits': generator_logits,
    'sampled': sampled,
    'corrupted': corrupted,
    'replaced': corrupted != originals,
    'discriminator_logits': discriminator_logits,
  }


@dataclasses.dataclass(frozen=True)
class Electra:
  """The objective API (objectives/api.py) with ELECTRA's two settings."""

  generator_fraction: float
  rtd_weight: float

  FRAMING = mlm.FRAMING  # [CLS] tokens [SEP], as BERT.
  SHOW = 'masked'  # tools.show renders the generator's masked input.

  def __post_init__(self):
    if not self.rtd_weight >= 0:
      raise ValueError(f'objective.rtd_weight={self.rtd_weight} must be >= 0.')

  def build_model(self, model_cfg) -> electra_model.ElectraPretraining:
    """Discriminator of `model_cfg` and a generator `generator_fraction` as wide."""
    generator_cfg = electra_model.generator_config(model_cfg, self.generator_fraction)
    return electra_model.ElectraPretraining(model_cfg, generator_cfg)

  @staticmethod
  def make_preprocess(objective_cfg, tokenizer, seed: int):
    """MLM's preprocessing: {inputs, targets, weights (masked), segment_ids, positions}."""
    return mlm.make_preprocess(objective_cfg, tokenizer, seed)

  def loss_fn(self, params, batch, rng, *, model):
    """MLM + rtd_weight x RTD, with (sum, weight) metrics; `rng=None` means evaluation."""
    out = forward(params, batch, rng, model=model)
    _, targets, weights = token_lm.predictions(batch)
    mlm_loss, mlm_metrics = metrics.token_cross_entropy(out['generator_logits'], targets, weights)
    rtd_loss, rtd_metrics = replaced_token_loss(
      out['discriminator_logits'], out['replaced'], batch['segment_ids'] > 0
    )
    loss = mlm_loss + self.rtd_weight * rtd_loss
    sampled_correct = jnp.sum((weights > 0) & (out['sampled'] == targets))
    return loss, {
      'loss': (loss, jnp.float32(1.0)),  # Per step; eval_summary recomposes it exactly.
      'mlm_loss': mlm_metrics['loss'],
      'mlm_accuracy': mlm_metrics['accuracy'],
      # ELECTRA's sampled_masked_lm_accuracy: how often a draw is the original token.
      'sampled_accuracy': (sampled_correct.astype(jnp.float32), mlm_metrics['accuracy'][1]),
      **rtd_metrics,
      **token_lm.dropped_metric(batch),
    }

  def predicted_length(self, objective_cfg, seq_len: int) -> int:
    """The generator predicts at MLM's gathered masked positions only."""
    return mlm.predicted_length(objective_cfg, seq_len)

  def loss_terms(self, objective_cfg) -> dict[str, float]:
    """MLM's mean + rtd_weight x RTD's mean (objectives/api.py)."""
    del objective_cfg
    return {'mlm_loss': 1.0, 'rtd_loss': self.rtd_weight}

  def eval_summary(self, values: dict[str, float]) -> dict[str, float]:
    """The total loss from the exact component means, and the generator's perplexity."""
    loss = values['mlm_loss'] + self.rtd_weight * values['rtd_loss']
    return {**values, 'loss': loss, 'mlm_perplexity': math.exp(min(values['mlm_loss'], 50.0))}


def configure(objective_cfg) -> Electra:
  """ELECTRA with `objective.generator_fraction` and `objective.rtd_weight`."""
  return Electra(
    generator_fraction=float(objective_cfg.generator_fraction),
    rtd_weight=float(objective_cfg.rtd_weight),
  )
