"""ERNIE-THU's knowledgeable encoder (Zhang et al. 2019), as layers on top of the Transformer:
token states fused with the vectors of the entities their text mentions (TransE vectors,
tools/transe.py), then a Transformer block that carries the fused knowledge to every
token, [CLS] included.

`EntityFusion`, ERNIE's information fusion for the tokens, with a residual:
  h_j = GELU(W_t w_j + W_e e_j + b)   (the W_e e_j term only where a mention starts)
  w_j' = LayerNorm(w_j + W_o h_j)
ERNIE also updates the entity sequence through its own multi-head attention and pretrains
the fusion with a denoising entity auto-encoder (dEA); neither is here: the entity
vectors stay fixed (as ERNIE keeps its TransE table) and the layers train on the task.
`EntityFusionClassifier` is the encoder, `EntityFusion`, one Transformer block (the same
shape as the encoder's; ERNIE's K-Encoder attends after fusing), BERT's pooler and a linear
classifier; `encoder` and `pooler` have Backbone's names, so a BERT checkpoint loads into
them and the fusion layers start fresh.
"""

import flax.linen as nn
import jax.numpy as jnp

from models import attention, dropout, flops, heads, transformer
from models.transformer import TransformerConfig


def _dense(cfg: TransformerConfig, features: int, name: str, fan_in: int, axes=('embed', 'mlp')):
  return nn.Dense(
    features,
    kernel_init=transformer.normal_init(cfg, *axes, fan_in=fan_in),
    bias_init=transformer.zeros_init(axes[1]),
    dtype=cfg.compute_dtype,
    param_dtype=cfg.storage_dtype,
    name=name,
  )


class EntityFusion(nn.Module):
  """x [batch, length, embed], entity_vectors [batch, length, k], entity_mask [batch,
  length] -> [batch, length, embed] (the formula above)."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, entity_vectors, entity_mask, deterministic: bool):
    cfg = self.cfg
    k = entity_vectors.shape[-1]
    tokens = _dense(cfg, cfg.d_model, 'token', cfg.d_model)(x)
    entity_in = _dense(cfg, cfg.d_model, 'entity', k, ('factor', 'mlp'))  # k: small, whole.
    entities = entity_in(entity_vectors.astype(cfg.compute_dtype))
    h = nn.gelu(tokens + entities * entity_mask[..., None].astype(entities.dtype))
    out = _dense(cfg, cfg.d_model, 'out', cfg.d_model, ('mlp', 'embed'))(h)
    out = dropout.Dropout(cfg.dropout_rate)(out, deterministic=deterministic)
    return transformer.layer_norm(cfg, 'norm')(x + out)


class EntityFusionClassifier(nn.Module):
  """[batch, num_labels] logits of a sentence (pair) with its mentions' entity vectors."""

  cfg: TransformerConfig
  num_labels: int
  entity_dim: int = 100  # k, the entity vectors' width (ERNIE's TransE: 100).

  EXTRA_INPUTS = ('entity_vectors', 'entity_mask')  # Batch arrays passed by name.

  def setup(self):
    self.encoder = transformer.Stack(self.cfg, name='encoder')
    self.fusion = EntityFusion(self.cfg, name='fusion')
    self.fusion_block = transformer.Block(self.cfg, name='fusion_block')
    self.pooler = heads.Pooler(self.cfg, name='pooler')
    self.dropout = dropout.Dropout(self.cfg.dropout_rate)
    self.classifier = heads.classes_dense(self.cfg, self.num_labels, 'classifier')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True,
               entity_vectors=None, entity_mask=None):  # fmt: skip
    """`entity_vectors` [batch, length, entity_dim] and `entity_mask` [batch, length];
    None (parameter init) mentions no entity."""
    if entity_vectors is None:
      entity_vectors = jnp.zeros((*tokens.shape, self.entity_dim), jnp.float32)
      entity_mask = jnp.zeros(tokens.shape, bool)
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    x = self.fusion(x, entity_vectors, entity_mask, deterministic)
    x = self.fusion_block(x, attention.SegmentMask.self_attend(segment_ids), deterministic)
    pooled = self.dropout(self.pooler(x), deterministic=deterministic)  # [batch, embed]
    return self.classifier(pooled).astype(jnp.float32)  # [batch, num_labels]

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """Per token: the fusion layer (token and output d x d, entity k x d) and the fusion
    block (its projections and attention over the row); the pooler and the classifier
    once per row."""
    del predicted_len
    cfg = self.cfg
    fusion = 2 * cfg.d_model * cfg.d_model + self.entity_dim * cfg.d_model
    block = flops.encoder_block_params(cfg) + flops.attention_score_macs(cfg, seq_len)
    return fusion + block + flops.pooled_classifier_macs(cfg, self.num_labels, seq_len)
