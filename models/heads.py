"""Output heads on top of the shared stack; each model is `Encoder` + one head.

`MaskedLM` is BERT's head: a transform (Dense, activation, LayerNorm), then the
decoder tied to the input embedding plus an output bias. `CausalLM` is GPT's:
the tied embedding (or an untied projection) applied to the final states.
"""

import flax.linen as nn
import jax

from models import transformer
from models.transformer import TransformerConfig


def untied_output(cfg: TransformerConfig, name: str) -> nn.Dense:
  """A vocabulary projection of its own, for configs with tie_embeddings=False."""
  return nn.Dense(
    cfg.vocab_size,
    use_bias=False,
    kernel_init=transformer.normal_init(cfg, 'embed', 'vocab'),
    dtype=cfg.compute_dtype,
    param_dtype=cfg.storage_dtype,
    name=name,
  )


class MaskedLM(nn.Module):
  """BERT-style encoder with the MLM head; returns logits [batch, length, vocab]."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.encoder = transformer.Encoder(cfg, name='encoder')
    self.transform = nn.Dense(
      cfg.d_model,
      kernel_init=transformer.normal_init(cfg, 'embed', 'mlp'),
      bias_init=transformer.zeros_init('mlp'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='mlm_transform',
    )
    self.transform_norm = transformer.layer_norm(cfg, 'mlm_norm')
    self.output_bias = self.param(
      'mlm_bias', transformer.zeros_init('vocab'), (cfg.vocab_size,), cfg.storage_dtype
    )
    if not cfg.tie_embeddings:
      self.decoder = untied_output(cfg, 'mlm_decoder')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    h = transformer.activation_fn(self.cfg.activation)(self.transform(x))
    h = self.transform_norm(h)
    logits = self.encoder.attend(h) if self.cfg.tie_embeddings else self.decoder(h)
    logits = logits + self.output_bias.astype(logits.dtype)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab'))


class CausalLM(nn.Module):
  """GPT-style decoder-only model; returns next-token logits [batch, length, vocab]."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    if not cfg.causal:
      raise ValueError('CausalLM needs a causal TransformerConfig (causal=True).')
    self.decoder = transformer.Encoder(cfg, name='decoder')
    if not cfg.tie_embeddings:
      self.lm_head = untied_output(cfg, 'lm_head')

  def __call__(
    self, tokens, segment_ids, positions=None, token_types=None, deterministic=True
  ) -> jax.Array:
    x = self.decoder(tokens, segment_ids, positions, token_types, deterministic)
    logits = self.decoder.attend(x) if self.cfg.tie_embeddings else self.lm_head(x)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab'))
