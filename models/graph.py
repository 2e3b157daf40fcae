"""Graph layers over a per-example adjacency, on top of the Transformer's token states:
the GNN-for-NLP entry point (a graph of a sentence's tokens: co-occurrence windows,
repeated words, dependency arcs when a parser provides them; data/graphs.py builds the
first two).

`GraphConvolution` (Kipf & Welling 2017): H' = act(D^-1/2 (A + I) D^-1/2 H W + b), the
self-loops added, D the degree of A + I.
`GraphAttention` (Velickovic et al. 2018): per head, e_ij = LeakyReLU(a^T [W h_i ; W h_j])
for the neighbours j of i (and i itself), softmax over them, the heads' outputs
concatenated (act: ELU).
Both take x [batch, nodes, dim], adjacency [batch, nodes, nodes] (1 where an edge is) and
mask [batch, nodes] (1 for real tokens): edges to or from a padding node are dropped, so
padding never reaches a real token, and padding nodes output zeros.
`GraphSequenceClassifier` is the encoder, `layers` graph layers, a mean over the real
tokens and a linear classifier: [batch, num_labels] logits; its `encoder` (and nothing
else) has the pretrained backbone's names, so a converted checkpoint loads into it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import dropout, flops, heads, transformer
from models.transformer import TransformerConfig

KINDS = ('gcn', 'gat')


def _edges(adjacency, mask):
  """[batch, nodes, nodes] float: the edges between real nodes, self-loops on real nodes."""
  real = mask.astype(jnp.float32)
  edges = (adjacency > 0).astype(jnp.float32) * real[:, :, None] * real[:, None, :]
  eye = jnp.eye(adjacency.shape[-1], dtype=jnp.float32)[None]
  return jnp.maximum(edges, eye * real[:, :, None])


def _dense(cfg: TransformerConfig, features: int, name: str, fan_in: int, bias: bool = True):
  """A graph layer's projection, its params named for sharding like the MLP's."""
  return nn.Dense(
    features,
    use_bias=bias,
    kernel_init=transformer.normal_init(cfg, 'embed', 'mlp', fan_in=fan_in),
    bias_init=transformer.zeros_init('mlp'),
    param_dtype=cfg.storage_dtype,
    name=name,
  )


class GraphConvolution(nn.Module):
  cfg: TransformerConfig
  features: int

  @nn.compact
  def __call__(self, x, adjacency, mask):
    a = _edges(adjacency, mask)  # [b, n, n]
    degree = jnp.sum(a, -1)  # [b, n]
    scale = jnp.where(degree > 0, jax.lax.rsqrt(jnp.maximum(degree, 1e-9)), 0.0)
    normalized = a * scale[:, :, None] * scale[:, None, :]
    h = _dense(self.cfg, self.features, 'dense', x.shape[-1])(x)  # [b, n, features]
    out = jnp.einsum('bij,bjf->bif', normalized, h)
    return nn.gelu(out) * mask[..., None].astype(out.dtype)


class GraphAttention(nn.Module):
  cfg: TransformerConfig
  features: int
  heads: int = 4

  @nn.compact
  def __call__(self, x, adjacency, mask):
    if self.features % self.heads:
      raise ValueError(f'GraphAttention: {self.features} features over {self.heads} heads.')
    size = self.features // self.heads
    a = _edges(adjacency, mask)
    h = _dense(self.cfg, self.features, 'dense', x.shape[-1], bias=False)(x)
    h = h.reshape(*h.shape[:-1], self.heads, size)  # [b, n, heads, size]
    vector = lambda name: nn.Dense(  # noqa: E731  (a per-head-dim score vector a)
      1, use_bias=False, name=name, param_dtype=self.cfg.storage_dtype,
      kernel_init=transformer.normal_init(self.cfg, 'kv', 'classes', fan_in=size),
    )  # fmt: skip
    source, target = vector('attend_source'), vector('attend_target')
    scores = source(h)[..., 0][:, :, None, :] + target(h)[..., 0][:, None, :, :]  # [b, i, j, heads]
    scores = nn.leaky_relu(scores, 0.2)
    scores = jnp.where(a[..., None] > 0, scores, -1e9)
    weights = jax.nn.softmax(scores, axis=2) * a[..., None]  # Padding rows: all zero.
    self.sow('intermediates', 'attention', weights)
    out = jnp.einsum('bijh,bjhs->bihs', weights, h).reshape(*x.shape[:-1], self.features)
    return nn.elu(out) * mask[..., None].astype(out.dtype)


class GraphSequenceClassifier(nn.Module):
  """The encoder, graph layers over the token states, mean pooling, a linear classifier."""

  cfg: TransformerConfig
  num_labels: int
  layers: int = 2
  kind: str = 'gcn'

  EXTRA_INPUTS = ('adjacency',)  # Batch arrays passed by name (objectives/shared/task_inputs).

  def setup(self):
    if self.kind not in KINDS:
      raise ValueError(f'graph kind {self.kind!r} is not one of {KINDS}.')
    self.encoder = transformer.Stack(self.cfg, name='encoder')
    layer = GraphConvolution if self.kind == 'gcn' else GraphAttention
    self.graph = [layer(self.cfg, self.cfg.d_model, name=f'graph_{i}') for i in range(self.layers)]
    self.dropout = dropout.Dropout(self.cfg.dropout_rate)
    self.classifier = heads.classes_dense(self.cfg, self.num_labels, 'classifier')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True,
               adjacency=None):  # fmt: skip
    """`adjacency` [batch, length, length]; None (parameter init) links no two tokens."""
    if adjacency is None:
      adjacency = jnp.zeros((*tokens.shape, tokens.shape[-1]), jnp.int8)
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    x = x.astype(jnp.float32)
    mask = segment_ids > 0  # [batch, length]
    for layer in self.graph:
      x = x + layer(x, adjacency, mask)  # Residual: the graph refines the token states.
    real = mask.astype(jnp.float32)[..., None]
    pooled = jnp.sum(x * real, 1) / jnp.maximum(jnp.sum(real, 1), 1.0)  # [batch, embed]
    pooled = self.dropout(pooled, deterministic=deterministic)
    return self.classifier(pooled.astype(self.cfg.compute_dtype)).astype(jnp.float32)

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """Per token and graph layer: its d x d projection and the sum over the row's
    `seq_len` neighbours (dense adjacency), GAT's two score vectors; the classifier once
    per row (mean pooling has no matmul)."""
    del predicted_len
    d = self.cfg.d_model
    layer = d * d + seq_len * d + (2 * d if self.kind == 'gat' else 0)
    return self.layers * layer + flops.pooled_classifier_macs(
      self.cfg, self.num_labels, seq_len, pooler=False
    )
