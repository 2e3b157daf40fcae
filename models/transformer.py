"""The one Transformer stack of plm-flax (Flax Linen).

Every family is a `TransformerConfig` plus, at most, a field and a branch here:
BERT is post-LN with token types and an embedding LayerNorm, GPT-2 is pre-LN,
causal, with a final LayerNorm. Encoder-decoder models (T5, BART) will add a
`Decoder` with cross-attention next to `Encoder`; `Block` already takes the
attention mask from outside so a cross-attention sub-layer slots in beside it.

Padding and packing are both expressed by `segment_ids` ([batch, length], 0 for
padding, 1..k for the packed documents of a row): attention never crosses a
segment, and in a causal stack it is also causal within the segment.

Every parameter carries logical axis names (see training/partitioning.py):
`vocab`, `embed`, `mlp`, `heads`, `kv`, `position`, `token_type`; activations
use `batch`, `length`, `act_embed`, `act_mlp`, `act_heads`, `act_kv`.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and behaviour of one Transformer stack; presets fill it in."""

  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  mlp_dim: int
  max_len: int = 512  # Rows of the learned position table (offset included).
  position_offset: int = 0  # RoBERTa: positions start at padding_idx + 1 = 2.
  embed_dim: int | None = None  # Factorized embeddings (ALBERT, ELECTRA): E, projected to d_model.
  share_layers: bool = False  # ALBERT: one block's parameters used by every layer.
  pooler: bool = False  # BERT-style pooler (tanh Dense on the first token) in the backbone.
  type_vocab_size: int = 2  # Token-type (segment A/B) embeddings; 0 disables them.
  head_dim: int | None = None  # Defaults to d_model // num_heads.
  causal: bool = False  # Decoder-only (GPT) when True.
  pre_norm: bool = False  # Pre-LN (GPT-2) when True, post-LN (BERT, GPT-1) when False.
  embed_norm: bool = True  # LayerNorm on the summed embeddings (BERT).
  final_norm: bool = False  # LayerNorm after the last block (GPT-2, pre-LN stacks).
  activation: str = 'gelu'  # 'gelu' (exact erf, BERT), 'gelu_tanh' (GPT-2) or 'relu' (ERNIE).
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  tie_embeddings: bool = True  # Output projection is the input embedding.
  init_std: float = 0.02
  dtype: str = 'float32'  # Compute dtype.
  param_dtype: str = 'float32'
  attention_impl: str | None = None  # None lets JAX choose (cudnn flash on GPU).

  @property
  def token_dim(self) -> int:
    """Width of the token embeddings (and of the tied output): E or d_model."""
    return self.embed_dim or self.d_model

  @property
  def max_positions(self) -> int:
    """Longest sequence the position table serves."""
    return self.max_len - self.position_offset

  @property
  def kv_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def storage_dtype(self):
    return _DTYPES[self.param_dtype]

  def replace(self, **changes) -> 'TransformerConfig':
    return dataclasses.replace(self, **changes)


def normal_init(cfg: TransformerConfig, *names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), names)


def zeros_init(*names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def ones_init(*names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def layer_norm(cfg: TransformerConfig, name: str, axis: str = 'embed') -> nn.LayerNorm:
  """LayerNorm whose scale and bias carry the logical `axis` ('factor' over E)."""
  return nn.LayerNorm(
    epsilon=cfg.layer_norm_eps,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.storage_dtype,
    scale_init=ones_init(axis),
    bias_init=zeros_init(axis),
    name=name,
  )


def embed_axis(cfg: TransformerConfig) -> str:
  """Logical name of the token-embedding width: 'factor' when it is a factorized E."""
  return 'factor' if cfg.embed_dim else 'embed'


def activation_fn(name: str) -> Callable:
  if name == 'gelu':
    return functools.partial(nn.gelu, approximate=False)
  if name == 'gelu_tanh':
    return functools.partial(nn.gelu, approximate=True)
  if name == 'relu':
    return nn.relu
  raise ValueError(f'Unknown activation {name!r}; expected gelu, gelu_tanh or relu.')


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array, causal: bool) -> jax.Array:
  """Boolean mask [batch, 1, q_len, kv_len]: same non-padding segment (and causal).

  A padding query (segment 0) attends to nothing; dot_product_attention then
  returns zeros for it, which the losses weight out anyway.
  """
  same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  mask = same & (kv_segment_ids[:, None, :] > 0)
  if causal:
    q_len, kv_len = q_segment_ids.shape[1], kv_segment_ids.shape[1]
    mask &= jnp.tril(jnp.ones((q_len, kv_len), dtype=bool))[None]
  return mask[:, None]


class Embed(nn.Module):
  """Token + learned position (+ token type) embeddings; `attend` ties the output.

  With factorized embeddings (ALBERT, ELECTRA-small) the tables are E wide,
  normalized there, then projected to d_model.
  """

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.token = self._table(cfg.vocab_size, 'vocab', 'token')
    self.position = self._table(cfg.max_len, 'position', 'position')
    if cfg.type_vocab_size:
      self.token_type = self._table(cfg.type_vocab_size, 'token_type', 'token_type')
    if cfg.embed_norm:
      self.norm = layer_norm(cfg, 'norm', embed_axis(cfg))
    if cfg.embed_dim:
      self.project = nn.Dense(
        cfg.d_model,
        kernel_init=normal_init(cfg, 'factor', 'embed'),
        bias_init=zeros_init('embed'),
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        name='project',
      )
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def _table(self, rows: int, axis: str, name: str) -> nn.Embed:
    cfg = self.cfg
    return nn.Embed(
      rows,
      cfg.token_dim,
      embedding_init=normal_init(cfg, axis, embed_axis(cfg)),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name=name,
    )

  def __call__(self, tokens, positions, token_types, deterministic: bool):
    x = self.token(tokens) + self.position(positions + self.cfg.position_offset)
    if self.cfg.type_vocab_size:
      x += self.token_type(token_types)
    if self.cfg.embed_norm:
      x = self.norm(x)  # [batch, length, token_dim]
    x = self.dropout(x, deterministic=deterministic)
    if self.cfg.embed_dim:
      x = self.project(x)  # [batch, length, embed]
    return nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits [batch, length, vocab] against the tied token embedding."""
    return self.token.attend(x)


class Projection(nn.Module):
  """A dense layer over several input and output axes, e.g. [embed] -> [heads, kv].

  Its kernel is created in its final shape (flax's DenseGeneral flattens it at
  init, which drops the logical axis names of a 3-D kernel).
  """

  cfg: TransformerConfig
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  names: tuple[str, ...]  # Logical names of the kernel's axes, inputs first.

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    fan_in = len(self.in_shape)
    shape = self.in_shape + self.out_shape
    kernel = self.param('kernel', normal_init(cfg, *self.names), shape, cfg.storage_dtype)
    bias = self.param('bias', zeros_init(*self.names[fan_in:]), self.out_shape, cfg.storage_dtype)
    kernel = jnp.asarray(kernel, cfg.compute_dtype)
    contract = (tuple(range(x.ndim - fan_in, x.ndim)), tuple(range(fan_in)))
    y = jax.lax.dot_general(x.astype(cfg.compute_dtype), kernel, (contract, ((), ())))
    return y + jnp.asarray(bias, cfg.compute_dtype)


class Attention(nn.Module):
  """Multi-head attention through `jax.nn.dot_product_attention`."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, kv, mask, deterministic: bool):
    cfg = self.cfg
    heads = (cfg.num_heads, cfg.kv_dim)
    dense = functools.partial(Projection, cfg, (cfg.d_model,), heads, ('embed', 'heads', 'kv'))
    q = dense(name='query')(x)  # [batch, q_len, heads, kv]
    k = dense(name='key')(kv)  # [batch, kv_len, heads, kv]
    v = dense(name='value')(kv)
    axes = ('batch', 'length', 'act_heads', 'act_kv')
    q, k, v = (nn.with_logical_constraint(t, axes) for t in (q, k, v))
    if cfg.attention_dropout_rate > 0 and not deterministic:
      # jax.nn.dot_product_attention has no dropout: spell it out when training.
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(cfg.kv_dim).astype(q.dtype)
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
      probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
      probs = jnp.where(mask, probs, 0)  # Fully masked (padding) rows give zeros.
      probs = nn.Dropout(cfg.attention_dropout_rate)(probs, deterministic=False)
      out = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=cfg.attention_impl)
      out = jnp.where(mask.any(axis=-1).transpose(0, 2, 1)[..., None], out, 0)
    out = nn.with_logical_constraint(out, axes)  # [batch, q_len, heads, kv]
    return Projection(cfg, heads, (cfg.d_model,), ('heads', 'kv', 'embed'), name='out')(out)


class Mlp(nn.Module):
  """Position-wise feed-forward: Dense -> activation -> Dense."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, deterministic: bool):
    cfg = self.cfg
    h = nn.Dense(
      cfg.mlp_dim,
      kernel_init=normal_init(cfg, 'embed', 'mlp'),
      bias_init=zeros_init('mlp'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='wi',
    )(x)
    h = activation_fn(cfg.activation)(h)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'act_mlp'))  # [batch, length, mlp]
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(
      cfg.d_model,
      kernel_init=normal_init(cfg, 'mlp', 'embed'),
      bias_init=zeros_init('embed'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='wo',
    )(h)


class Block(nn.Module):
  """Self-attention and MLP sub-layers, post-LN (BERT) or pre-LN (GPT-2)."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, mask, deterministic: bool):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    sublayers = (
      ('attention', lambda h: Attention(cfg, name='attention')(h, h, mask, deterministic)),
      ('mlp', lambda h: Mlp(cfg, name='mlp')(h, deterministic)),
    )
    for name, sublayer in sublayers:
      if cfg.pre_norm:
        x = x + drop(sublayer(layer_norm(cfg, f'{name}_norm')(x)), deterministic=deterministic)
      else:
        x = layer_norm(cfg, f'{name}_norm')(x + drop(sublayer(x), deterministic=deterministic))
      x = nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))
    return x


class Encoder(nn.Module):
  """Embeddings and a stack of blocks; causal for decoder-only models.

  Returns the final hidden states [batch, length, embed]; heads (models/heads.py)
  turn them into logits, using `self.embed.attend` when the output is tied.
  """

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.embed = Embed(cfg, name='embed')
    if cfg.share_layers:  # ALBERT: the same parameters at every depth.
      self.shared_block = Block(cfg, name='block')
    else:
      self.blocks = [Block(cfg, name=f'block_{i}') for i in range(cfg.num_layers)]
    if self.cfg.final_norm:
      self.final_norm = layer_norm(self.cfg, 'final_norm')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    """Args: int arrays [batch, length]; positions restart at 0 in each segment."""
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    mask = attention_mask(segment_ids, segment_ids, self.cfg.causal)
    x = self.embed(tokens, positions, token_types, deterministic)
    blocks = [self.shared_block] * self.cfg.num_layers if self.cfg.share_layers else self.blocks
    for block in blocks:
      x = block(x, mask, deterministic)
    if self.cfg.final_norm:
      x = self.final_norm(x)
    return x

  def attend(self, x: jax.Array) -> jax.Array:
    return self.embed.attend(x)
