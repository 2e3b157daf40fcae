"""The one Transformer stack of plm-flax (Flax Linen).

Every family is a `TransformerConfig` plus, at most, a field and a branch here:
BERT is post-LN with token types and an embedding LayerNorm, GPT-2 is pre-LN,
causal, with a final LayerNorm; T5 is pre-norm with a scale-only RMS norm, no
biases and relative position buckets; BART is post-LN with learned positions.
An encoder-decoder (`num_decoder_layers > 0`) is two `Stack`s, the
second with `is_decoder=True` (causal self-attention plus cross-attention), over
one token embedding shared by both (models/heads.py `Seq2SeqLM`).

Layers are a Python loop (params `block_0`, `block_1`, ...) or, with
`scan_layers`, one `nn.scan` (params `blocks`, stacked on a leading `layers`
axis) with the same numerics; `remat` recomputes each block's activations in the
backward pass. models/convert/scan.py converts params between the layouts, and
tools/relayout.py whole runs.

Padding and packing are both expressed by `segment_ids` ([batch, length], 0 for
padding, 1..k for the packed documents of a row): attention never crosses a
segment, and in a causal stack it is also causal within the segment. An encoder
may instead take per-position attention kinds (models/attention.py
`attention_kinds_mask`), which mix UniLM's bidirectional, left-to-right,
right-to-left and seq2seq masks in one batch.

Every parameter carries logical axis names (see training/partitioning.py):
`vocab`, `embed`, `mlp`, `heads`, `kv`, `position`, `token_type`; activations
use `batch`, `length`, `act_embed`, `act_mlp`, `act_heads`, `act_kv`.
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import attention
from models.model_config import ModelConfig


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ModelConfig):
  """Shape and behaviour of one Transformer stack; presets fill it in."""

  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  mlp_dim: int
  num_decoder_layers: int = 0  # > 0: an encoder-decoder (T5, BART, MASS) with this deep a decoder.
  max_len: int = 512  # Rows of the learned position table (offset included).
  position: str = 'learned'  # 'learned' table, or 'relative' buckets (T5) shared across layers.
  relative_buckets: int = 32  # T5: buckets of the relative position bias.
  relative_max_distance: int = 128  # T5: distances beyond this share the last bucket.
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
  gated_mlp: bool = False  # T5 v1.1: act(x W0) * (x W1), then Wo.
  norm: str = 'layer'  # 'layer' (LayerNorm) or 'rms' (T5: scale-only, no mean, no bias).
  use_bias: bool = True  # Biases in the dense layers (T5 has none).
  scale_attention: bool = True  # Divide logits by sqrt(head_dim); T5 folds it into the init.
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  # Dropout on the MLP's hidden activations: T5 and BART have it; BERT, GPT and their
  # kin drop only the sub-layer outputs (residual dropout), never the intermediate ones.
  activation_dropout_rate: float = 0.0
  tie_embeddings: bool = True  # Output projection is the input embedding.
  scale_tied_output: bool = False  # T5 v1.0: final states x d_model**-0.5 before the tied output.
  init_std: float = 0.02
  fan_in_init: bool = False  # T5 (Mesh TF): kernels N(0, 1/fan_in), embeddings N(0, 1).
  dtype: str = 'float32'  # Compute dtype.
  param_dtype: str = 'float32'
  attention_impl: str | None = None  # None/'' auto, 'xla', 'cudnn', 'splash': attention.py.
  scan_layers: bool = False  # One nn.scan over the layers (fast compiles) instead of a loop.
  remat: str = 'none'  # Recompute in the backward pass: 'none', 'full', or 'dots' (keep matmuls).
  adapter_dim: int = 0  # Houlsby adapters of this bottleneck after every sub-layer (0: none).

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


def normal_init(cfg: TransformerConfig, *names: str, fan_in: int) -> Callable:
  """N(0, init_std), or N(0, 1 / fan_in) with `fan_in_init` (an embedding table: fan_in=1)."""
  std = fan_in**-0.5 if cfg.fan_in_init else cfg.init_std
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def zeros_init(*names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def ones_init(*names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


def layer_norm(cfg: TransformerConfig, name: str, axis: str = 'embed') -> nn.Module:
  """LayerNorm (or T5's RMS norm) whose params carry the logical `axis` ('factor' over E)."""
  if cfg.norm == 'rms':
    return nn.RMSNorm(
      epsilon=cfg.layer_norm_eps,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      scale_init=ones_init(axis),
      name=name,
    )
  if cfg.norm != 'layer':
    raise ValueError(f"Unknown norm {cfg.norm!r}; expected 'layer' or 'rms'.")
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


def relative_bucket(
  relative_position: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int
) -> jax.Array:
  """T5's bucket of each (key position - query position): exact up to num_buckets / 2
  (per direction when bidirectional), then logarithmic up to `max_distance`."""
  relative_position = relative_position.astype(jnp.int32)
  bucket = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    bucket += (relative_position > 0).astype(relative_position.dtype) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)  # Only the past is visible.
  max_exact = num_buckets // 2
  # The same float32 operations, in the same order, as the released T5 code.
  scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
  scaled = scaled / jnp.log(max_distance / max_exact) * (num_buckets - max_exact)
  far = jnp.minimum(max_exact + scaled.astype(relative_position.dtype), num_buckets - 1)
  return bucket + jnp.where(distance < max_exact, distance, far)


class RelativePositionBias(nn.Module):
  """T5's learned bias per (bucket, head), added to every layer's attention logits."""

  cfg: TransformerConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, q_positions: jax.Array, kv_positions: jax.Array) -> jax.Array:
    """Positions [batch, len] (restarting in each segment) -> bias [batch, heads, q, kv]."""
    cfg = self.cfg
    table = self.param(
      'embedding',
      normal_init(cfg, 'relative_buckets', 'heads', fan_in=cfg.d_model),
      (cfg.relative_buckets, cfg.num_heads),
      cfg.storage_dtype,
    )
    relative = kv_positions[:, None, :] - q_positions[:, :, None]  # [batch, q, kv]
    buckets = relative_bucket(
      relative, self.bidirectional, cfg.relative_buckets, cfg.relative_max_distance
    )
    bias = jnp.asarray(table, cfg.compute_dtype)[buckets]  # [batch, q, kv, heads]
    return bias.transpose(0, 3, 1, 2)


class Embed(nn.Module):
  """Token + learned position (+ token type) embeddings; `attend` ties the output.

  With factorized embeddings (ALBERT, ELECTRA-small) the tables are E wide,
  normalized there, then projected to d_model. An encoder-decoder passes its
  one `shared_token` table to both stacks' embeddings.
  """

  cfg: TransformerConfig
  shared_token: nn.Module | None = None

  def setup(self):
    cfg = self.cfg
    if self.shared_token is not None:
      self.token = self.shared_token
    else:
      self.token = self._table(cfg.vocab_size, 'vocab', 'token')
    if cfg.position == 'learned':
      self.position = self._table(cfg.max_len, 'position', 'position')
    elif cfg.position != 'relative':
      raise ValueError(f"Unknown position {cfg.position!r}; expected 'learned' or 'relative'.")
    if cfg.type_vocab_size:
      self.token_type = self._table(cfg.type_vocab_size, 'token_type', 'token_type')
    if cfg.embed_norm:
      self.norm = layer_norm(cfg, 'norm', embed_axis(cfg))
    if cfg.embed_dim:
      self.project = nn.Dense(
        cfg.d_model,
        kernel_init=normal_init(cfg, 'factor', 'embed', fan_in=cfg.token_dim),
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
      embedding_init=normal_init(cfg, axis, embed_axis(cfg), fan_in=1),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name=name,
    )

  def __call__(self, tokens, positions, token_types, deterministic: bool):
    x = self.token(tokens)
    if self.cfg.position == 'learned':
      x += self.position(positions + self.cfg.position_offset)
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
  fan_in: int | None = None  # For fan_in_init; defaults to the input size.

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    fan_in = len(self.in_shape)
    shape = self.in_shape + self.out_shape
    init = normal_init(cfg, *self.names, fan_in=self.fan_in or math.prod(self.in_shape))
    kernel = self.param('kernel', init, shape, cfg.storage_dtype)
    kernel = jnp.asarray(kernel, cfg.compute_dtype)
    contract = (tuple(range(x.ndim - fan_in, x.ndim)), tuple(range(fan_in)))
    y = jax.lax.dot_general(x.astype(cfg.compute_dtype), kernel, (contract, ((), ())))
    if not cfg.use_bias:
      return y
    bias = self.param('bias', zeros_init(*self.names[fan_in:]), self.out_shape, cfg.storage_dtype)
    return y + jnp.asarray(bias, cfg.compute_dtype)


class Attention(nn.Module):
  """Multi-head attention; the product itself is models/attention.py's, by
  `cfg.attention_impl` (XLA reference, cuDNN, splash).

  `mask` is an `attention.SegmentMask`; `bias` ([batch, heads, q_len, kv_len], T5's
  relative positions) is added to the logits; `kv` is `x` for self-attention and the
  encoder output for cross-attention. When training, attention dropout draws from the
  'dropout' rng (or, on cuDNN, from cuDNN's generator).
  """

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, kv, mask: attention.SegmentMask, deterministic: bool, bias=None):
    cfg = self.cfg
    heads = (cfg.num_heads, cfg.kv_dim)
    dense = functools.partial(Projection, cfg, (cfg.d_model,), heads, ('embed', 'heads', 'kv'))
    # T5 leaves out the 1/sqrt(head_dim) of the logits and puts it in the query's init.
    q_fan_in = cfg.d_model * (1 if cfg.scale_attention else cfg.kv_dim)
    q = dense(name='query', fan_in=q_fan_in)(x)  # [batch, q_len, heads, kv]
    k = dense(name='key')(kv)  # [batch, kv_len, heads, kv]
    v = dense(name='value')(kv)
    axes = ('batch', 'length', 'act_heads', 'act_kv')
    q = nn.with_logical_constraint(q, axes)
    # Every query needs every key of its row: where the rules split `length` over
    # devices (sequence parallelism), K and V are gathered whole ('kv_length').
    kv_axes = ('batch', 'kv_length', 'act_heads', 'act_kv')
    k, v = (nn.with_logical_constraint(t, kv_axes) for t in (k, v))
    rate = 0.0 if deterministic else cfg.attention_dropout_rate
    out = attention.dot_product_attention(
      q,
      k,
      v,
      mask,
      bias=bias,
      scale=None if cfg.scale_attention else 1.0,
      dropout_rate=rate,
      dropout_rng=self.make_rng('dropout') if rate > 0 else None,
      implementation=cfg.attention_impl,
      dropout_seed=attention.layer_seed(self.path),
      replayed_layers=cfg.scan_layers or cfg.share_layers,
    )
    out = nn.with_logical_constraint(out, axes)  # [batch, q_len, heads, kv]
    return Projection(cfg, heads, (cfg.d_model,), ('heads', 'kv', 'embed'), name='out')(out)


class Mlp(nn.Module):
  """Position-wise feed-forward: Dense -> activation -> Dense (gated: act(x W0) * x W1)."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, deterministic: bool):
    cfg = self.cfg
    dense = functools.partial(
      nn.Dense,
      use_bias=cfg.use_bias,
      bias_init=zeros_init('mlp'),
      kernel_init=normal_init(cfg, 'embed', 'mlp', fan_in=cfg.d_model),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
    )
    act = activation_fn(cfg.activation)
    if cfg.gated_mlp:
      h = act(dense(cfg.mlp_dim, name='wi_0')(x)) * dense(cfg.mlp_dim, name='wi_1')(x)
    else:
      h = act(dense(cfg.mlp_dim, name='wi')(x))
    h = nn.with_logical_constraint(h, ('batch', 'length', 'act_mlp'))  # [batch, length, mlp]
    h = nn.Dropout(cfg.activation_dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(
      cfg.d_model,
      use_bias=cfg.use_bias,
      kernel_init=normal_init(cfg, 'mlp', 'embed', fan_in=cfg.mlp_dim),
      bias_init=zeros_init('embed'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='wo',
    )(h)


class Adapter(nn.Module):
  """Houlsby et al. 2019's bottleneck: x + up(act(down(x))), adapter_dim wide. The up
  projection starts at zero, so a model with fresh adapters computes exactly what it
  did without them; fine-tuning then trains only adapters, norms and the head
  (training/adaptation.py `freeze`)."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dense = functools.partial(
      nn.Dense, use_bias=True, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype
    )
    h = dense(
      cfg.adapter_dim,
      kernel_init=normal_init(cfg, 'embed', 'adapter', fan_in=cfg.d_model),
      bias_init=zeros_init('adapter'),
      name='down',
    )(x)
    h = dense(
      cfg.d_model,
      kernel_init=zeros_init('adapter', 'embed'),
      bias_init=zeros_init('embed'),
      name='up',
    )(activation_fn(cfg.activation)(h))
    return x + h


class Block(nn.Module):
  """Self-attention, (cross-attention,) MLP sub-layers, post-LN (BERT) or pre-LN (GPT-2).

  Args of __call__: x [batch, length, embed]; mask, an `attention.SegmentMask`;
  deterministic; bias (relative positions) or None; for a decoder block of an
  encoder-decoder, `encoded` [batch, enc_length, embed] and `cross_mask` (the
  SegmentMask of decoder over encoder segments).
  """

  cfg: TransformerConfig
  cross_attention: bool = False

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, bias=None, encoded=None, cross_mask=None):
    cfg = self.cfg
    drop = nn.Dropout(cfg.dropout_rate)
    sublayers = [
      ('attention', lambda h: Attention(cfg, name='attention')(h, h, mask, deterministic, bias))
    ]
    if self.cross_attention:
      cross = Attention(cfg, name='cross_attention')
      sublayers.append(('cross_attention', lambda h: cross(h, encoded, cross_mask, deterministic)))
    sublayers.append(('mlp', lambda h: Mlp(cfg, name='mlp')(h, deterministic)))
    if cfg.adapter_dim:  # Houlsby: an adapter on each sub-layer's output, before the residual.
      sublayers = [
        (name, lambda h, f=f, name=name: Adapter(cfg, name=f'{name}_adapter')(f(h)))
        for name, f in sublayers
      ]
    for name, sublayer in sublayers:
      if cfg.pre_norm:
        x = x + drop(sublayer(layer_norm(cfg, f'{name}_norm')(x)), deterministic=deterministic)
      else:
        x = layer_norm(cfg, f'{name}_norm')(x + drop(sublayer(x), deterministic=deterministic))
      x = nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))
    return x


class _ScanBlock(Block):
  """A Block as an nn.scan body: returns (carry, no per-layer output)."""

  def __call__(self, x, *args):
    return super().__call__(x, *args), None


_REMAT_POLICIES = {
  'full': None,  # Save nothing: recompute the whole block.
  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def block_class(cfg: TransformerConfig, scan: bool = False) -> type[Block]:
  """Block, or _ScanBlock for nn.scan, wrapped in nn.remat as `cfg.remat` asks."""
  block = _ScanBlock if scan else Block
  if cfg.remat == 'none':
    return block
  if cfg.remat not in _REMAT_POLICIES:
    raise ValueError(f"Unknown remat {cfg.remat!r}; expected 'none', 'full' or 'dots'.")
  # deterministic (argument 3, counting self) is a Python bool: static.
  return nn.remat(block, static_argnums=(3,), policy=_REMAT_POLICIES[cfg.remat])


class Stack(nn.Module):
  """Embeddings and a stack of blocks: a bidirectional encoder (BERT), a decoder-only
  stack (`cfg.causal`, GPT), or (`is_decoder`) the decoder of an encoder-decoder, with
  cross-attention (T5, BART). Modules that hold one name it for its role ('encoder',
  'decoder'), so parameter paths say what the stack is.

  Returns the final hidden states [batch, length, embed]; heads (models/heads.py)
  turn them into logits, using `self.embed.attend` when the output is tied.
  """

  cfg: TransformerConfig
  is_decoder: bool = False
  shared_token: nn.Module | None = None

  def setup(self):
    cfg = self.cfg
    depth = cfg.num_decoder_layers if self.is_decoder else cfg.num_layers
    self.embed = Embed(cfg, self.shared_token, name='embed')
    if cfg.position == 'relative':
      self.relative_bias = RelativePositionBias(cfg, not self.causal, name='relative_bias')
    if cfg.share_layers:  # ALBERT: the same parameters at every depth.
      if cfg.scan_layers:
        raise ValueError('scan_layers with share_layers: a shared block has nothing to scan.')
      self.shared_block = block_class(cfg)(cfg, self.is_decoder, name='block')
    elif cfg.scan_layers:
      self.scanned_blocks = nn.scan(
        block_class(cfg, scan=True),
        variable_axes={'params': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=(nn.broadcast,) * 5,  # mask, deterministic, bias, encoded, cross_mask
        length=depth,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )(cfg, self.is_decoder, name='blocks')
    else:
      block = block_class(cfg)
      self.blocks = [block(cfg, self.is_decoder, name=f'block_{i}') for i in range(depth)]
    if cfg.final_norm:
      self.final_norm = layer_norm(cfg, 'final_norm')

  @property
  def causal(self) -> bool:
    return self.cfg.causal or self.is_decoder

  def __call__(
    self,
    tokens,
    segment_ids,
    positions=None,
    token_types=None,
    deterministic=True,
    *,
    encoded=None,
    encoder_segment_ids=None,
    attention_kinds=None,
  ):
    """Args: int arrays [batch, length]; positions restart at 0 in each segment.

    A decoder also takes `encoded` [batch, enc_length, embed] and its
    `encoder_segment_ids` [batch, enc_length]: decoder segment k attends to
    encoder segment k (packed pairs stay apart). A bidirectional encoder may take
    `attention_kinds` [batch, length] (BIDIRECTIONAL, LEFT_TO_RIGHT, RIGHT_TO_LEFT
    per position, see models/attention.py `attention_kinds_mask`) in place of its
    all-bidirectional mask.
    """
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    if attention_kinds is not None and self.causal:
      raise ValueError(
        'attention_kinds apply to a bidirectional encoder; this stack is causal'
        f' (causal={self.cfg.causal}, is_decoder={self.is_decoder}).'
      )
    # [batch, length] arrays, not a [batch, 1, length, length] mask: see models/attention.py.
    mask = attention.SegmentMask.self_attend(segment_ids, causal=self.causal, kinds=attention_kinds)
    cross_mask = None
    if self.is_decoder:
      cross_mask = attention.SegmentMask.cross_attend(segment_ids, encoder_segment_ids)
    bias = self.relative_bias(positions, positions) if self.cfg.position == 'relative' else None
    x = self.embed(tokens, positions, token_types, deterministic)
    args = (mask, deterministic, bias, encoded, cross_mask)
    if self.cfg.scan_layers:
      x, _ = self.scanned_blocks(x, *args)
    else:
      blocks = [self.shared_block] * self.cfg.num_layers if self.cfg.share_layers else self.blocks
      for block in blocks:
        x = block(x, *args)
    if self.cfg.final_norm:
      x = self.final_norm(x)
    return x

  def attend(self, x: jax.Array) -> jax.Array:
    return self.embed.attend(x)
