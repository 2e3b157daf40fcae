"""XLNet (Yang et al. 2019): two-stream relative attention with segment recurrence.

XLNet is trained on factorization orders of its input. The host samples, for each
packed document, an order of its tokens and hands the model `ranks` [batch, length]:
0 for the context (every token that is not predicted: the first (K-1)/K of the
order, framing tokens, padding) and 1, 2, ... for the predicted tokens in their
order. Two streams of states run through the same layers:

  content stream h: h_i attends to h_j when rank[j] <= rank[i] (it sees its own token),
  query stream g:   g_i attends to h_j when rank[j] <  rank[i] (it never sees x_i),

both only within the same packed document (`segment_ids`, 0 = padding). The
context's ranks tie at 0, so the context reads itself bidirectionally and every
target sees all of it: the released code does the same (its non-target tokens
get index -1, "visible to all"), and it is exactly the paper's partial prediction
log p(x_{z>c} | x_{z<=c}) (Section 2.3), since no context state ever reads a
target. The query stream starts from a learned mask embedding and exists only at
the predicted positions (`target_positions` [batch, predictions], the released
code's `target_mapping`), so it costs about 1/K of the content stream; its top
states give the logits through the input embedding (tied) plus a bias. A layer
runs both streams as one set of query rows (`XLNetLayer`).

Positions are relative (Transformer-XL, Dai et al. 2019): the score of query i and
key j is (q_i + u) k_j + (q_i + v) W_r R(i - j) + (q_i + s) e_{s_ij}, with R the
sinusoid of the distance, per-layer content / position / segment biases u, v, s
(`r_w_bias`, `r_r_bias`, `r_s_bias`; the released models untie them across layers)
and XLNet's relative segment encoding e_same / e_diff over `token_types` (sentence
A / B of a pair: all 0 in pretraining on packed documents, where the term is the
same for every key of a query and so changes nothing; it matters in fine-tuning).
Distances are row coordinates: attention never crosses a document, and within one
they equal the token distances. Every distance gets its position score for every
query ([batch, heads, queries, distances]), then each (query, key) pair gathers its
own: the query stream's queries are scattered positions, where Transformer-XL's
shift trick does not apply.

Memory (segment recurrence): `mems`, one [batch, mem_len, embed] array per layer
(the layer's input states of an earlier chunk), are keys and values of both
streams, in full for the tokens of the same document (`mem_segment_ids`); the
call returns the current chunk's layer inputs, gradient stopped, as the next
chunk's memory. In the factorization order the memory comes before the whole chunk.

Not implemented: the bidirectional-data variant (`bi_data`, half the batch with
reversed distances) and `clamp_len`. The feed-forward and LayerNorms are
models/transformer.py's; the attention is this family's own (two streams, three
score terms, memory), which is why XLNet is a file and not a branch of that stack.

Parameters carry the logical axes `vocab`, `embed`, `heads`, `kv`, `mlp`, and
`token_type` for the two relative segment embeddings.
"""

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import dropout, transformer
from models.model_config import ModelConfig

_MASKED = -1e30  # Score of a key a query may not see (float32; a full row stays finite).


@dataclasses.dataclass(frozen=True)
class XLNetConfig(ModelConfig):
  """Shape of an XLNet; presets fill it in."""

  vocab_size: int
  num_layers: int = 12
  d_model: int = 768
  num_heads: int = 12
  mlp_dim: int = 3072
  head_dim: int | None = None  # Defaults to d_model // num_heads.
  activation: str = 'gelu_tanh'  # The released TF code's GELU is the tanh approximation.
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1  # Embeddings, positions, sub-layer outputs, the top query stream.
  attention_dropout_rate: float = 0.1  # On the attention probabilities (`dropatt`).
  activation_dropout_rate: float = 0.1  # On the FFN's inner activations, as XLNet's FFN.
  init_std: float = 0.02
  dtype: str = 'float32'  # Compute dtype.
  param_dtype: str = 'float32'

  # Read by models/transformer.py's Mlp and layer_norm, which XLNet shares: fixed, not fields.
  norm = 'layer'
  use_bias = True  # The feed-forward layers have biases (the attention projections have none).
  gated_mlp = False
  fan_in_init = False
  num_mlps = 1
  quant = ''  # Its Mlp's matmuls are transformer.Projections: float, no LoRA.
  quant_group_size = 0
  lora_rank = 0

  @property
  def kv_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  def count_params(self) -> int:
    """Parameters of the released XLNetModel: embeddings, mask embedding and the layers.

    The language-model output bias (vocab_size values) is a pretraining head and is
    not counted.
    """
    model = XLNet(self)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.init_inputs(8)))
    return sum(x.size for x in jax.tree.leaves(shapes))

  def train_flops_per_token(
    self, seq_len: int, chunks: int = 2, predict_fraction: int = 6
  ) -> float:
    """Forward + backward FLOPs per token (6 x multiply-adds), as objectives/permutation.py
    runs the model: a row of `seq_len` in `chunks` chunks, each after the first reading
    the previous one as memory, 1 / `predict_fraction` of the tokens predicted.

    Counted: the content stream's projections (keys, values and the position
    projection over memory and chunk), feed-forward, all three score terms and the
    value sum; the query stream's query / output projections, feed-forward, scores
    and the tied output onto the vocabulary at the predicted positions. Not counted:
    lookups, norms, softmaxes, the gather of the position scores.
    """
    d, inner, mlp = self.d_model, self.num_heads * self.kv_dim, self.mlp_dim
    chunk = seq_len // chunks
    total = 0.0
    for c in range(chunks):
      mem = chunk if c else 0
      keys, distances = mem + chunk, mem + 2 * chunk - 1
      preds = chunk // predict_fraction
      per_layer = (
        chunk * (2 * d * inner + 2 * d * mlp)  # Content queries, output, feed-forward.
        + keys * 2 * d * inner  # Keys and values, memory included.
        + distances * d * inner  # The position projection W_r R.
        + chunk * inner * (2 * keys + distances)  # Content scores, values and position scores.
        + preds * (2 * d * inner + 2 * d * mlp)  # The query stream's own matmuls.
        + preds * inner * (2 * keys + distances)
      )
      total += self.num_layers * per_layer + preds * d * self.vocab_size
    return 6.0 * total / seq_len


# The config class of this family's presets (models/presets.py reads CONFIG and PRESETS).
CONFIG = XLNetConfig


def _xlnet(layers: int, d_model: int, heads: int, mlp_dim: int) -> dict:
  # The released models' SentencePiece vocabulary (cased).
  return dict(
    vocab_size=32000, num_layers=layers, d_model=d_model, num_heads=heads, mlp_dim=mlp_dim
  )


PRESETS: dict[str, dict] = {
  # Yang et al. 2019, Section 3.1: XLNet-Base and XLNet-Large, the sizes of BERT's.
  # 116,718,336 and 360,268,800 parameters, counted as HF's XLNetModel is built (no LM bias).
  'xlnet-base-cased': _xlnet(12, 768, 12, 3072),
  'xlnet-large-cased': _xlnet(24, 1024, 16, 4096),
  # Small enough for tests and CPU runs (configs/cpu/xlnet.py).
  'xlnet-tiny': _xlnet(2, 128, 2, 512),
}


def attention_masks(ranks, segment_ids, target_positions=None, mem_segment_ids=None):
  """Which keys each stream's queries may attend to, from the factorization ranks.

  Keys are the memory (all of it earlier in the order: visible to the same
  document) followed by the chunk (visible by rank).

  Args:
    ranks: [batch, length] ints: 0 for context, 1.. for the predicted tokens in order.
    segment_ids: [batch, length]: 0 for padding, 1..k for the packed documents.
    target_positions: [batch, predictions] positions of the query stream, or None.
    mem_segment_ids: [batch, mem_len] segment ids of the memory, or None.

  Returns:
    (content [batch, length, mem_len + length], query [batch, predictions,
    mem_len + length] or None) booleans.
  """

  def visible(q_ranks, q_segments, strict: bool):
    same = (q_segments[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
    k_ranks, q_ranks = ranks[:, None, :], q_ranks[:, :, None]
    mask = same & ((k_ranks < q_ranks) if strict else (k_ranks <= q_ranks))
    if mem_segment_ids is None:
      return mask
    memory = (q_segments[:, :, None] == mem_segment_ids[:, None, :]) & (
      mem_segment_ids[:, None, :] > 0
    )
    return jnp.concatenate([memory, mask], axis=-1)

  content = visible(ranks, segment_ids, strict=False)
  if target_positions is None:
    return content, None
  gather = lambda x: jnp.take_along_axis(x, target_positions, axis=1)  # noqa: E731
  return content, visible(gather(ranks), gather(segment_ids), strict=True)


def sinusoid(distances, dim: int):
  """Transformer-XL's relative position encoding [distances, dim]: sin | cos halves."""
  inv_freq = 1.0 / (10000 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))  # [dim / 2]
  angles = distances.astype(jnp.float32)[:, None] * inv_freq[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


@dataclasses.dataclass(frozen=True)
class _Queries:
  """What the queries of a layer need besides their states, [batch, queries, keys] each."""

  mask: jax.Array  # Visible keys.
  distance_index: jax.Array  # Each pair's column in the per-distance position scores.
  segment_differs: jax.Array | None  # Relative segment encoding: True where types differ.


class XLNetLayer(nn.Module):
  """One layer for both streams (post-LN, as in XLNet).

  The streams share every weight and differ only in their queries' masks, and
  everything but attention is position-wise; so the query stream's states ride
  along as extra query rows after the content stream's, x = [h; g], through one
  attention (keys and values: the memory and h only), one output projection,
  residual + LayerNorm, feed-forward, residual + LayerNorm. Numerically the same
  as two passes, in half the kernels (and half the compile time).
  """

  cfg: XLNetConfig

  def _param(self, name, shape, names):
    cfg = self.cfg
    init = nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), names)
    return jnp.asarray(self.param(name, init, shape, cfg.storage_dtype), cfg.compute_dtype)

  @nn.compact
  def __call__(self, x, length: int, mem, pos_emb, queries: _Queries, deterministic: bool):
    """Args: x [batch, length + predictions, embed], content rows first; mem [batch,
    mem_len, embed] or None; pos_emb [distances, embed]. Returns the new x."""
    cfg = self.cfg
    d, heads = cfg.d_model, (cfg.num_heads, cfg.kv_dim)
    proj = lambda name: self._param(name, (d, *heads), ('embed', 'heads', 'kv'))  # noqa: E731
    w_q, w_k, w_v, w_o, w_r = (proj(n) for n in ('q', 'k', 'v', 'o', 'r'))
    bias = lambda name: self._param(name, heads, ('heads', 'kv'))  # noqa: E731
    content_bias, position_bias, segment_bias = bias('r_w_bias'), bias('r_r_bias'), bias('r_s_bias')
    seg_embed = self._param('seg_embed', (2, *heads), ('token_type', 'heads', 'kv'))
    drop = lambda rate, y: dropout.Dropout(rate)(y, deterministic=deterministic)  # noqa: E731

    axes = ('batch', 'length', 'act_heads', 'act_kv')
    h = x[:, :length]
    keys = h if mem is None else jnp.concatenate([mem.astype(h.dtype), h], axis=1)
    k = nn.with_logical_constraint(jnp.einsum('bkd,dnh->bknh', keys, w_k), axes)
    v = nn.with_logical_constraint(jnp.einsum('bkd,dnh->bknh', keys, w_v), axes)
    q = nn.with_logical_constraint(jnp.einsum('bqd,dnh->bqnh', x, w_q), axes)
    r = jnp.einsum('rd,dnh->rnh', pos_emb.astype(h.dtype), w_r)  # [distances, heads, kv]

    f32 = dict(preferred_element_type=jnp.float32)
    by_content = jnp.einsum('bqnh,bknh->bnqk', q + content_bias, k, **f32)
    by_distance = jnp.einsum('bqnh,rnh->bnqr', q + position_bias, r, **f32)
    by_position = jnp.take_along_axis(by_distance, queries.distance_index[:, None], axis=-1)
    by_segment = jnp.einsum('bqnh,snh->bnqs', q + segment_bias, seg_embed, **f32)
    if queries.segment_differs is None:  # Every pair "same": one value per query.
      by_segment = by_segment[..., :1]
    else:
      differs = queries.segment_differs[:, None]
      by_segment = jnp.where(differs, by_segment[..., 1:], by_segment[..., :1])
    scores = (by_content + by_position + by_segment) / math.sqrt(cfg.kv_dim)
    mask = queries.mask[:, None]  # [batch, 1, queries, keys]
    probs = jax.nn.softmax(jnp.where(mask, scores, _MASKED), axis=-1)
    probs = jnp.where(mask, probs, 0.0).astype(v.dtype)  # Padding queries read nothing.
    probs = drop(cfg.attention_dropout_rate, probs)
    out = jnp.einsum('bnqk,bknh,dnh->bqd', probs, v, w_o)
    x = transformer.layer_norm(cfg, 'attention_norm')(x + drop(cfg.dropout_rate, out))
    ff = transformer.Mlp(cfg, name='mlp')(x, deterministic)
    x = transformer.layer_norm(cfg, 'mlp_norm')(x + drop(cfg.dropout_rate, ff))
    return nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))


def _init_inputs(seq_len: int) -> tuple:
  """Example (inputs, segment_ids, ranks, target_positions) for `init`."""
  tokens = jnp.ones((1, seq_len), jnp.int32)
  return tokens, tokens, jnp.zeros_like(tokens), jnp.zeros((1, max(1, seq_len // 6)), jnp.int32)


class XLNet(nn.Module):
  """The XLNet stack: (content states, query states, new memory) of one chunk."""

  cfg: XLNetConfig

  def setup(self):
    cfg = self.cfg
    init = nn.initializers.normal(cfg.init_std)
    self.word_embedding = nn.Embed(
      cfg.vocab_size,
      cfg.d_model,
      embedding_init=nn.with_logical_partitioning(init, ('vocab', 'embed')),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
    )
    self.mask_emb = self.param(
      'mask_emb', nn.with_logical_partitioning(init, ('embed',)), (cfg.d_model,), cfg.storage_dtype
    )
    self.layers = [XLNetLayer(cfg, name=f'layer_{i}') for i in range(cfg.num_layers)]
    self.dropout = dropout.Dropout(cfg.dropout_rate)

  def __call__(
    self,
    inputs,
    segment_ids,
    ranks,
    target_positions=None,
    token_types=None,
    mems: Sequence[jax.Array] | None = None,
    mem_segment_ids=None,
    deterministic: bool = True,
  ):
    """Runs one chunk.

    Args:
      inputs: [batch, length] token ids.
      segment_ids: [batch, length]: 0 for padding, 1..k for the packed documents.
      ranks: [batch, length] factorization ranks (see `attention_masks`); all 0
        gives plain bidirectional attention (fine-tuning).
      target_positions: [batch, predictions] positions of the query stream; None
        runs the content stream only.
      token_types: [batch, length] sentence A / B ids for the relative segment
        encoding, or None (all one type); the memory counts as type 0, as in XLNet.
      mems: one [batch, mem_len, embed] array per layer, or None.
      mem_segment_ids: [batch, mem_len] segment ids of `mems` (required with them).
      deterministic: no dropout when True.

    Returns:
      (h [batch, length, embed], g [batch, predictions, embed] or None, new_mems):
      new_mems holds each layer's input states of this chunk, gradient stopped.
    """
    cfg = self.cfg
    batch, length = inputs.shape
    if mems is not None and (len(mems) != cfg.num_layers or mem_segment_ids is None):
      raise ValueError(
        f'mems needs one array per layer ({cfg.num_layers}, got {len(mems)}) and mem_segment_ids.'
      )
    mem_len = 0 if mems is None else mems[0].shape[1]
    content_mask, query_mask = attention_masks(
      ranks, segment_ids, target_positions, mem_segment_ids
    )

    # Every query-key distance, row coordinates with the memory first: [-(length-1), mem + length).
    distances = jnp.arange(-(length - 1), mem_len + length)
    pos_emb = self.dropout(sinusoid(distances, cfg.d_model), deterministic=deterministic)
    q_coords = jnp.broadcast_to(mem_len + jnp.arange(length), (batch, length))  # Key coordinates.
    x = self.dropout(self.word_embedding(inputs), deterministic=deterministic)
    mask, q_types = content_mask, token_types
    if target_positions is not None:  # The query stream's rows follow the content stream's.
      q_coords = jnp.concatenate([q_coords, mem_len + target_positions], axis=1)
      mask = jnp.concatenate([content_mask, query_mask], axis=1)
      if token_types is not None:
        gathered = jnp.take_along_axis(token_types, target_positions, axis=1)
        q_types = jnp.concatenate([token_types, gathered], axis=1)
      g = jnp.broadcast_to(
        jnp.asarray(self.mask_emb, cfg.compute_dtype),
        (batch, target_positions.shape[1], cfg.d_model),
      )
      x = jnp.concatenate([x, self.dropout(g, deterministic=deterministic)], axis=1)
    differs = None
    if token_types is not None:
      k_types = jnp.pad(token_types, ((0, 0), (mem_len, 0)))  # The memory counts as type 0.
      differs = q_types[:, :, None] != k_types[:, None, :]
    keys = jnp.arange(mem_len + length)
    queries = _Queries(
      mask=mask,
      distance_index=q_coords[:, :, None] - keys[None, None, :] + (length - 1),
      segment_differs=differs,
    )

    new_mems = []
    for i, layer in enumerate(self.layers):
      new_mems.append(jax.lax.stop_gradient(x[:, :length]))
      mem = None if mems is None else jax.lax.stop_gradient(mems[i])
      x = layer(x, length, mem, pos_emb, queries, deterministic)
    g = None if target_positions is None else x[:, length:]
    return x[:, :length], g, new_mems

  def attend(self, x):
    """x [..., embed] -> logits [..., vocab] through the (tied) input embedding."""
    return self.word_embedding.attend(x)

  @nn.nowrap
  def init_inputs(self, seq_len: int) -> tuple:
    return _init_inputs(seq_len)


class XLNetLM(nn.Module):
  """XLNet with its language-model output: (logits [batch, predictions, vocab], new_mems).

  The logits of the query stream at `target_positions`, through the input
  embedding (tied, as XLNet's `lm_loss`) plus a per-token bias.
  """

  cfg: XLNetConfig

  def setup(self):
    self.xlnet = XLNet(self.cfg)
    self.dropout = dropout.Dropout(self.cfg.dropout_rate)
    self.lm_bias = self.param(
      'lm_bias',
      nn.with_logical_partitioning(nn.initializers.zeros_init(), ('vocab',)),
      (self.cfg.vocab_size,),
      self.cfg.storage_dtype,
    )

  def __call__(
    self,
    inputs,
    segment_ids,
    ranks,
    target_positions,
    token_types=None,
    mems=None,
    mem_segment_ids=None,
    deterministic: bool = True,
  ):
    """See `XLNet.__call__`; `target_positions` is required here."""
    _, g, new_mems = self.xlnet(
      inputs,
      segment_ids,
      ranks,
      target_positions,
      token_types,
      mems,
      mem_segment_ids,
      deterministic,
    )
    g = self.dropout(g, deterministic=deterministic)
    logits = self.xlnet.attend(g).astype(jnp.float32) + self.lm_bias.astype(jnp.float32)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab')), new_mems

  @nn.nowrap
  def init_inputs(self, seq_len: int) -> tuple:
    return _init_inputs(seq_len)
