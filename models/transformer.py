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

The fields live in models/transformer_config.py. The modules stay in this one file
(about 750 lines): Embed, Projection, Attention, Mlp, Adapter, Block and Stack are the
layers of one stack, each reading the others' fields and init helpers, and a family's
branch is easier to check against its paper with the whole block in view.

Every parameter carries logical axis names (see training/partitioning.py):
`vocab`, `embed`, `mlp`, `heads`, `kv`, `position`, `token_type`; activations
use `batch`, `length`, `act_embed`, `act_mlp`, `act_heads`, `act_kv`.
"""

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import attention, dropout, input_perturbation, matmul, quantization
from models.transformer_config import (
  TransformerConfig,  # Also read as transformer.TransformerConfig.
)


def normal_init(cfg: TransformerConfig, *names: str, fan_in: int) -> Callable:
  """N(0, init_std), or N(0, 1 / fan_in) with `fan_in_init` (an embedding table: fan_in=1)."""
  std = fan_in**-0.5 if cfg.fan_in_init else cfg.init_std
  return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def zeros_init(*names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def ones_init(*names: str) -> Callable:
  return nn.with_logical_partitioning(nn.initializers.ones_init(), names)


class AffineNorm(nn.Module):
  """MobileBERT's NoNorm: x * scale + bias per feature, without LayerNorm's statistics
  (cheaper on phones; Sun et al. 2020, section 4.2). Params are named as LayerNorm's."""

  cfg: TransformerConfig
  axis: str = 'embed'

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    width = (x.shape[-1],)
    scale = self.param('scale', ones_init(self.axis), width, cfg.storage_dtype)
    bias = self.param('bias', zeros_init(self.axis), width, cfg.storage_dtype)
    return x * jnp.asarray(scale, cfg.compute_dtype) + jnp.asarray(bias, cfg.compute_dtype)


def layer_norm(cfg: TransformerConfig, name: str, axis: str = 'embed') -> nn.Module:
  """LayerNorm (T5's RMS norm, MobileBERT's NoNorm) whose params carry the logical `axis`
  ('factor' over E)."""
  if cfg.norm == 'affine':
    return AffineNorm(cfg, axis, name=name)
  if cfg.norm == 'rms':
    return nn.RMSNorm(
      epsilon=cfg.layer_norm_eps,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      scale_init=ones_init(axis),
      name=name,
    )
  if cfg.norm != 'layer':
    raise ValueError(f"Unknown norm {cfg.norm!r}; expected 'layer', 'rms' or 'affine'.")
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


def trigram(x: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
  """MobileBERT's trigram input: [batch, length, E] -> [batch, length, 3E], each position's
  next, own and previous embedding, in that order (transformers' and the released code's).

  Past a row's ends the neighbour is zeros, and so it is across the boundary of two packed
  segments, so that no document sees another. Padding (segment 0) is a neighbour like any
  token: the released model was trained seeing [PAD]'s embedding after a row's last token,
  so a padded row computes exactly what it computes in transformers.
  """
  zeros = jnp.zeros_like(x[:, :1])
  after = jnp.concatenate([x[:, 1:], zeros], axis=1)  # [batch, length, E]: token t + 1.
  before = jnp.concatenate([zeros, x[:, :-1]], axis=1)  # token t - 1.
  if segment_ids is not None:
    here, there = segment_ids[:, :-1], segment_ids[:, 1:]  # [batch, length - 1]: t, t + 1.
    edge = jnp.zeros_like(segment_ids[:, :1], dtype=bool)  # Past the ends: zeros already.
    sees_next = jnp.concatenate([(here == there) | (there == 0), edge], axis=1)
    sees_previous = jnp.concatenate([edge, (here == there) | (here == 0)], axis=1)
    after = jnp.where(sees_next[..., None], after, 0)
    before = jnp.where(sees_previous[..., None], before, 0)
  return jnp.concatenate([after, x, before], axis=-1)


class Embed(nn.Module):
  """Token + learned position (+ token type) embeddings; `attend` ties the output.

  With factorized embeddings (ALBERT, ELECTRA-small) the tables are E wide,
  normalized there, then projected to d_model. With `embed_trigram` (MobileBERT) only the
  token table is E wide: the trigram of token embeddings is projected to d_model first,
  then d_model-wide positions and token types are added and normalized. An
  encoder-decoder passes its one `shared_token` table to both stacks' embeddings. A
  quantized model (`quant` 'int8' or 'weight', compress.py) keeps its token table as int8
  rows with a scale each (models/quantization.QuantizedEmbed): the largest table of a
  small model, which would otherwise stay float32.

  The token embeddings (the table's rows, before anything is added) are sown as
  'intermediates' / 'token_embedding' when the caller makes that collection mutable, and
  a 'perturbations' / 'token_embedding' array [batch, length, token_dim] passed with the
  params is added to them (models/input_perturbation.py: attribution, adversarial
  training); without either collection nothing is computed for them.
  """

  cfg: TransformerConfig
  shared_token: nn.Module | None = None

  def setup(self):
    cfg = self.cfg
    # Width (and its logical name) at which the embeddings are summed and normalized.
    summed = (cfg.d_model, 'embed') if cfg.embed_trigram else (cfg.token_dim, embed_axis(cfg))
    if self.shared_token is not None:
      self.token = self.shared_token
    elif cfg.quant in ('int8', 'weight'):  # A quantized model's token table: int8 rows.
      names = ('vocab', embed_axis(cfg))
      self.token = quantization.QuantizedEmbed(
        cfg.vocab_size, cfg.token_dim, names, cfg.compute_dtype, name='token'
      )
    else:
      self.token = self._table(cfg.vocab_size, 'vocab', 'token')
    if cfg.position == 'learned':
      self.position = self._table(cfg.max_len, 'position', 'position', *summed)
    elif cfg.position != 'relative':
      raise ValueError(f"Unknown position {cfg.position!r}; expected 'learned' or 'relative'.")
    if cfg.type_vocab_size:
      self.token_type = self._table(cfg.type_vocab_size, 'token_type', 'token_type', *summed)
    if cfg.max_2d_positions:  # LayoutLM: x0 and x1 share a table, y0 and y1 another.
      rows = cfg.max_2d_positions
      self.layout = {
        name: self._table(rows, 'position', f'layout_{name}', *summed) for name in 'xyhw'
      }
    if cfg.embed_norm:
      self.norm = layer_norm(cfg, 'norm', summed[1])
    if cfg.embed_dim or cfg.embed_trigram:
      fan_in = cfg.token_dim * (3 if cfg.embed_trigram else 1)
      self.project = nn.Dense(
        cfg.d_model,
        kernel_init=normal_init(cfg, 'factor', 'embed', fan_in=fan_in),
        bias_init=zeros_init('embed'),
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        name='project',
      )
    self.dropout = dropout.Dropout(cfg.dropout_rate)

  def _table(
    self, rows: int, axis: str, name: str, width: int | None = None, width_axis: str = ''
  ) -> nn.Embed:
    """A table [rows, width], token_dim wide by default."""
    cfg = self.cfg
    return nn.Embed(
      rows,
      width or cfg.token_dim,
      embedding_init=normal_init(cfg, axis, width_axis or embed_axis(cfg), fan_in=1),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name=name,
    )

  def __call__(
    self, tokens, positions, token_types, deterministic: bool, segment_ids=None, boxes=None
  ):
    """Args: int arrays [batch, length]; `segment_ids` keeps MobileBERT's trigram inside
    each packed segment (None: the whole row is one sequence); `boxes` [batch, length, 4]
    (x0, y0, x1, y1) with `cfg.max_2d_positions` (LayoutLM; None: boxes of zeros)."""
    x = self.token(tokens)  # [batch, length, token_dim]
    self.sow('intermediates', input_perturbation.NAME, x)  # Attribution reads them.
    if self.has_variable(input_perturbation.COLLECTION, input_perturbation.NAME):
      x += self.get_variable(input_perturbation.COLLECTION, input_perturbation.NAME).astype(x.dtype)
    if self.cfg.embed_trigram:
      x = self.project(trigram(x, segment_ids))  # [batch, length, embed]
    if self.cfg.position == 'learned':
      x += self.position(positions + self.cfg.position_offset)
    if self.cfg.type_vocab_size:
      x += self.token_type(token_types)
    if self.cfg.max_2d_positions:
      x += self._layout(jnp.zeros((*tokens.shape, 4), jnp.int32) if boxes is None else boxes)
    elif boxes is not None:
      raise ValueError('boxes need model.max_2d_positions > 0 (a LayoutLM preset).')
    if self.cfg.embed_norm:
      x = self.norm(x)  # [batch, length, token_dim]
    x = self.dropout(x, deterministic=deterministic)
    if self.cfg.embed_dim and not self.cfg.embed_trigram:
      x = self.project(x)  # [batch, length, embed]
    return nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))

  def _layout(self, boxes) -> jax.Array:
    """LayoutLM's 2-D position embeddings [batch, length, width] of `boxes` [batch,
    length, 4]: x0 + y0 + x1 + y1 + height + width, each a row of its table."""
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))  # [batch, length] each.
    table = self.layout
    return (
      table['x'](x0) + table['y'](y0) + table['x'](x1) + table['y'](y1)
      + table['h'](y1 - y0) + table['w'](x1 - x0)
    )  # fmt: skip

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits [batch, length, vocab] against the tied token embedding."""
    return self.token.attend(x)


class Projection(nn.Module):
  """A dense layer over several input and output axes, e.g. [embed] -> [heads, kv].

  Its kernel is created in its final shape (flax's DenseGeneral flattens it at
  init, which drops the logical axis names of a 3-D kernel). The float product is
  models/matmul.py's (autodiff's gradients, the weight gradient laid out for XLA's CPU;
  no forward-mode autodiff through it).

  With `cfg.quant` (models/quantization.py) the same layer is quantized: 'fake' keeps the
  float params and rounds the kernel and the input in the forward pass; 'int8' holds an
  int8 `kernel`, its per-output-channel `kernel_scale` [1, out...] and a calibrated
  per-tensor `input_scale`, and multiplies in integers; 'weight' holds a `kernel` of
  `cfg.quant_bits_of(layer)` bits (uint8, packed along the last input axis, for 4 bits or
  fewer) and its `kernel_scale` [groups, out...]. The layer is read from the module path
  (`block_<i>`). When the caller makes the 'calibration' collection mutable, the largest
  magnitude of the input is recorded there ('input_max', the maximum over calls), which
  calibrates `input_scale`; otherwise nothing is recorded.
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
    if self.is_mutable_collection(quantization.CALIBRATION) and not self.is_initializing():
      top = jnp.max(jnp.abs(x)).astype(jnp.float32)
      self.sow(quantization.CALIBRATION, quantization.INPUT_MAX, top,
               init_fn=lambda: jnp.zeros((), jnp.float32), reduce_fn=jnp.maximum)  # fmt: skip
    if cfg.quant not in quantization.MODES:
      raise ValueError(f'quant={cfg.quant!r}; expected one of {quantization.MODES}.')
    if cfg.quant in ('', 'fake'):
      init = normal_init(cfg, *self.names, fan_in=self.fan_in or math.prod(self.in_shape))
      kernel = self.param('kernel', init, shape, cfg.storage_dtype)
      if cfg.quant == 'fake':
        bits = cfg.quant_bits_of(quantization.layer_of(self.path))
        kernel = quantization.fake_quantize_kernel(kernel, fan_in, bits, cfg.quant_group_size)
        x = quantization.fake_quantize_input(x, bits)
      kernel = jnp.asarray(kernel, cfg.compute_dtype)
      multiply = matmul.product if self.is_initializing() else matmul.contract
      y = multiply(x.astype(cfg.compute_dtype), kernel, fan_in)
    else:
      y = self._quantized(x, shape, fan_in)
    if cfg.lora_rank and self.name in cfg.lora_targets:
      y += self._low_rank(x, fan_in)
    if not cfg.use_bias:
      return y
    bias = self.param('bias', zeros_init(*self.names[fan_in:]), self.out_shape, cfg.storage_dtype)
    return y + jnp.asarray(bias, cfg.compute_dtype)

  def _low_rank(self, x, fan_in: int):
    """LoRA's update (alpha / r) x (x A) B: A [in..., r] from N(0, 1/in), B [r, out...] at
    zero, so a fresh update adds nothing."""
    cfg = self.cfg
    rank, names = cfg.lora_rank, self.names
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal', in_axis=tuple(range(fan_in)),
                                            out_axis=-1)  # fmt: skip
    a = self.param('lora_a', nn.with_logical_partitioning(init, (*names[:fan_in], 'lora')),
                   (*self.in_shape, rank), cfg.storage_dtype)  # fmt: skip
    b = self.param('lora_b', zeros_init('lora', *names[fan_in:]), (rank, *self.out_shape),
                   cfg.storage_dtype)  # fmt: skip
    contract = (tuple(range(x.ndim - fan_in, x.ndim)), tuple(range(fan_in)))
    low = jax.lax.dot_general(
      x.astype(cfg.compute_dtype), jnp.asarray(a, cfg.compute_dtype), (contract, ((), ()))
    )  # [..., r]
    up = jax.lax.dot_general(
      low, jnp.asarray(b, cfg.compute_dtype), (((low.ndim - 1,), (0,)), ((), ()))
    )
    scale = (cfg.lora_alpha or rank) / rank
    return up * jnp.asarray(scale, cfg.compute_dtype)

  def _quantized(self, x, shape: tuple[int, ...], fan_in: int):
    """The matmul of an 'int8' or 'weight' kernel (its params are written by
    quantization.quantize_tree; the inits below only give their shapes)."""
    cfg = self.cfg
    out_names = self.names[fan_in:]
    groups = 1
    if cfg.quant == 'weight':
      groups = quantization.group_count(math.prod(self.in_shape), cfg.quant_group_size)
    scale = self.param(
      'kernel_scale', ones_init(None, *out_names), (groups, *self.out_shape), jnp.float32
    )
    if cfg.quant == 'int8':
      kernel = self.param('kernel', zeros_init(*self.names), shape, jnp.int8)
      input_scale = self.param('input_scale', ones_init(), (), jnp.float32)
      return quantization.int8_matmul(x, kernel, scale, input_scale, fan_in, cfg.compute_dtype)
    bits = cfg.quant_bits_of(quantization.layer_of(self.path))
    stored = shape
    dtype = jnp.int8
    if quantization.container_bits(bits) < 8:
      stored, dtype = quantization.stored_kernel_shape(shape, fan_in, bits), jnp.uint8
    kernel = self.param('kernel', zeros_init(*self.names), stored, dtype)
    return quantization.weight_only_matmul(x, kernel, scale, fan_in, bits, cfg.compute_dtype)


class Attention(nn.Module):
  """Multi-head attention; the product itself is models/attention.py's, by
  `cfg.attention_impl` (XLA reference, cuDNN, splash).

  `mask` is an `attention.SegmentMask`; `bias` ([batch, heads, q_len, kv_len], T5's
  relative positions) is added to the logits; `kv` is `x` for self-attention and the
  encoder output for cross-attention. With `cfg.prefix_length` = P a self-attention layer
  puts P learned keys and values ('prefix_key', 'prefix_value' [P, heads, kv]) before the
  row's, which every real query sees (P-tuning v2); the sown keys and values leave them
  out, the attention weights have their P columns first. When training, attention dropout
  draws from the 'dropout' rng (or, on cuDNN, from cuDNN's generator). `num_heads` is the layer's own
  (`cfg.heads_of(layer)`) once heads were pruned.

  Three optional collections, untouched unless the caller asks for them:
  - 'intermediates' (mutable): the layer's 'queries', 'keys' and 'values' are sown, so that a
    distillation loss computes attention scores and value relations from them whatever
    the attention implementation (objectives/distill.py);
  - 'attention_weights' (mutable): the layer's attention distributions 'probs'
    [batch, heads, q_len, kv_len] (fp32, before dropout), the ones the XLA reference
    applies (models/intermediates.py's `attention_weights` reads them per layer; nothing
    is computed for it when the collection is not mutable);
  - 'head_mask': a [heads] multiplier of each head's output (1: kept, 0: masked); the
    gradient of a loss with respect to it is Michel et al.'s head importance
    (models/head_pruning.py).
  """

  cfg: TransformerConfig
  num_heads: int | None = None  # Defaults to cfg.num_heads.

  @nn.compact
  def __call__(
    self, x, kv, mask: attention.SegmentMask, deterministic: bool, bias=None, values=None
  ):
    """`values` (default `kv`) is what the values are projected from: MobileBERT's queries
    and keys read a bottleneck, its values the wider block input. The output is
    `cfg.inner_dim` wide."""
    cfg = self.cfg
    heads = (cfg.num_heads if self.num_heads is None else self.num_heads, cfg.kv_dim)
    values = kv if values is None else values

    def dense(inputs, name, fan_in=None):  # [batch, len, width] -> [batch, len, heads, kv]
      width = (inputs.shape[-1],)
      names = ('embed', 'heads', 'kv')
      return Projection(cfg, width, heads, names, fan_in=fan_in, name=name)(inputs)

    # T5 leaves out the 1/sqrt(head_dim) of the logits and puts it in the query's init.
    q_fan_in = x.shape[-1] * (1 if cfg.scale_attention else cfg.kv_dim)
    q = dense(x, 'query', q_fan_in)  # [batch, q_len, heads, kv]
    k = dense(kv, 'key')  # [batch, kv_len, heads, kv]
    v = dense(values, 'value')
    axes = ('batch', 'length', 'act_heads', 'act_kv')
    q = nn.with_logical_constraint(q, axes)
    # Every query needs every key of its row: where the rules split `length` over
    # devices (sequence parallelism), K and V are gathered whole ('kv_length').
    kv_axes = ('batch', 'kv_length', 'act_heads', 'act_kv')
    k, v = (nn.with_logical_constraint(t, kv_axes) for t in (k, v))
    for name, value in (('queries', q), ('keys', k), ('values', v)):
      self.sow('intermediates', name, value)
    if cfg.prefix_length and mask.self_attention:
      k, v, mask, bias = self._with_prefix(k, v, mask, bias)
    scale = 1.0 / math.sqrt(q.shape[-1]) if cfg.scale_attention else 1.0
    probs = None
    if self.is_mutable_collection('attention_weights') and not self.is_initializing():
      # [batch, heads, q_len, kv_len] fp32, before attention dropout: the XLA reference
      # applies exactly these; a fused kernel computes the same function to rounding.
      # (init makes every collection mutable: it keeps none.)
      probs = attention.attention_probabilities(q, k, mask, bias=bias, scale=scale)
      self.sow('attention_weights', 'probs', probs)
    rate = 0.0 if deterministic else cfg.attention_dropout_rate
    out = attention.dot_product_attention(
      q,
      k,
      v,
      mask,
      bias=bias,
      scale=scale,
      probs=probs,
      dropout_rate=rate,
      dropout_rng=self.make_rng('dropout') if rate > 0 else None,
      implementation=cfg.attention_impl,
      dropout_seed=attention.layer_seed(self.path),
      replayed_layers=cfg.scan_layers or cfg.share_layers,
    )
    out = nn.with_logical_constraint(out, axes)  # [batch, q_len, heads, kv]
    if self.has_variable('head_mask', 'mask'):
      head_mask = self.get_variable('head_mask', 'mask')  # [heads]
      out = out * jnp.asarray(head_mask, out.dtype)[:, None]
    return Projection(cfg, heads, (cfg.inner_dim,), ('heads', 'kv', 'embed'), name='out')(out)

  def _with_prefix(self, k, v, mask, bias):
    """P-tuning v2 / prefix tuning: `cfg.prefix_length` learned keys and values of this
    layer before the row's ([batch, prefix + kv_len, heads, kv]), seen by every real query;
    a relative-position bias gets zeros in their columns."""
    prefix, batch = self.cfg.prefix_length, k.shape[0]
    shape = (prefix, *k.shape[2:])  # [prefix, heads, kv]
    learned = []
    for name in ('prefix_key', 'prefix_value'):
      init = normal_init(self.cfg, 'prefix', 'heads', 'kv', fan_in=1)
      table = self.param(name, init, shape, self.cfg.storage_dtype)
      learned.append(jnp.broadcast_to(jnp.asarray(table, k.dtype), (batch, *shape)))
    k = jnp.concatenate([learned[0], k], axis=1)
    v = jnp.concatenate([learned[1], v], axis=1)
    if bias is not None:  # [batch or 1, heads, q_len, kv_len]
      pad = jnp.zeros((*bias.shape[:3], prefix), bias.dtype)
      bias = jnp.concatenate([pad, bias], axis=-1)
    return k, v, mask.replace(prefix=prefix), bias


class Mlp(nn.Module):
  """Position-wise feed-forward: Dense -> activation -> Dense (gated: act(x W0) * x W1).
  Its matmuls are `Projection`s, as attention's are, so that quantization and pruning
  see every matmul of a block in one module."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x, deterministic: bool):
    cfg = self.cfg
    width = (x.shape[-1],)  # d_model, or a MobileBERT block's bottleneck_dim.
    dense = functools.partial(Projection, cfg, width, (cfg.mlp_dim,), ('embed', 'mlp'))
    act = activation_fn(cfg.activation)
    if cfg.gated_mlp:
      h = act(dense(name='wi_0')(x)) * dense(name='wi_1')(x)
    else:
      h = act(dense(name='wi')(x))
    h = nn.with_logical_constraint(h, ('batch', 'length', 'act_mlp'))  # [batch, length, mlp]
    h = dropout.Dropout(cfg.activation_dropout_rate)(h, deterministic=deterministic)
    return Projection(cfg, (cfg.mlp_dim,), width, ('mlp', 'embed'), name='wo')(h)


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
      kernel_init=normal_init(cfg, 'embed', 'adapter', fan_in=x.shape[-1]),
      bias_init=zeros_init('adapter'),
      name='down',
    )(x)
    h = dense(
      x.shape[-1],
      kernel_init=zeros_init('adapter', 'embed'),
      bias_init=zeros_init('embed'),
      name='up',
    )(activation_fn(cfg.activation)(h))
    return x + h


def check_block_fields(cfg: TransformerConfig) -> None:
  """Raises a ValueError naming a MobileBERT field (bottleneck, stacked MLPs) set wrongly."""
  if cfg.num_mlps < 1:
    raise ValueError(f'num_mlps={cfg.num_mlps}: a block needs at least 1 feed-forward sub-layer.')
  if cfg.shared_qk_bottleneck and not cfg.bottleneck_dim:
    raise ValueError('shared_qk_bottleneck=True needs bottleneck_dim > 0 (it is a bottleneck).')
  if cfg.bottleneck_dim and cfg.pre_norm:
    raise ValueError(
      f"bottleneck_dim={cfg.bottleneck_dim} is MobileBERT's post-LN block; pre_norm must be False."
    )


def bottleneck(cfg: TransformerConfig, name: str, x: jax.Array) -> jax.Array:
  """MobileBERT's bottleneck: norm(x W + b), [batch, length, embed] -> [.., bottleneck_dim]."""
  narrow = Projection(cfg, (cfg.d_model,), (cfg.bottleneck_dim,), ('embed', 'mlp'), name=name)
  return layer_norm(cfg, f'{name}_norm')(narrow(x))


class Block(nn.Module):
  """Self-attention, (cross-attention,) MLP sub-layers, post-LN (BERT) or pre-LN (GPT-2).

  With `num_mlps` > 1 (MobileBERT) the MLP sub-layers are 'mlp', 'mlp_1', ... in the order
  they run. With `bottleneck_dim` (MobileBERT) the sub-layers run between a projection
  down ('bottleneck_in') and one back up ('bottleneck_out', whose residual is the block
  input); only the latter's output is dropped, as in MobileBERT.

  Args of __call__: x [batch, length, embed]; mask, an `attention.SegmentMask`;
  deterministic; bias (relative positions) or None; for a decoder block of an
  encoder-decoder, `encoded` [batch, enc_length, embed] and `cross_mask` (the
  SegmentMask of decoder over encoder segments).
  """

  cfg: TransformerConfig
  cross_attention: bool = False
  layer: int = 0  # Depth in the stack: sizes its attention after head pruning.

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, bias=None, encoded=None, cross_mask=None):
    cfg = self.cfg
    drop = dropout.Dropout(cfg.dropout_rate)
    heads = cfg.heads_of(self.layer)
    self_attention = Attention(cfg, heads, name='attention')
    check_block_fields(cfg)
    block_input, shared, values = x, None, None
    if cfg.bottleneck_dim:  # MobileBERT: the sub-layers run bottleneck_dim wide.
      x = bottleneck(cfg, 'bottleneck_in', x)  # [batch, length, bottleneck]
      if cfg.shared_qk_bottleneck:
        shared, values = bottleneck(cfg, 'bottleneck_qk', block_input), block_input

    def attend(h):
      queries_keys = h if shared is None else shared
      return self_attention(queries_keys, queries_keys, mask, deterministic, bias, values=values)

    sublayers = [('attention', attend)]
    if self.cross_attention:
      cross = Attention(cfg, name='cross_attention')
      sublayers.append(('cross_attention', lambda h: cross(h, encoded, cross_mask, deterministic)))
    for name in ['mlp'] + [f'mlp_{i}' for i in range(1, cfg.num_mlps)]:
      sublayers.append((name, lambda h, name=name: Mlp(cfg, name=name)(h, deterministic)))
    if cfg.adapter_dim:  # Houlsby: an adapter on each sub-layer's output, before the residual.
      sublayers = [
        (name, lambda h, f=f, name=name: Adapter(cfg, name=f'{name}_adapter')(f(h)))
        for name, f in sublayers
      ]
    # Inside MobileBERT's bottleneck nothing is dropped: only its output is (below).
    inner_drop = functools.partial(drop, deterministic=deterministic or bool(cfg.bottleneck_dim))
    for name, sublayer in sublayers:
      if cfg.pre_norm:
        x = x + inner_drop(sublayer(layer_norm(cfg, f'{name}_norm')(x)))
      else:
        x = layer_norm(cfg, f'{name}_norm')(x + inner_drop(sublayer(x)))
      x = nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))
    if cfg.bottleneck_dim:  # Back to d_model; the residual is the block input.
      width = ((cfg.bottleneck_dim,), (cfg.d_model,))
      wide = Projection(cfg, *width, ('mlp', 'embed'), name='bottleneck_out')(x)
      wide = drop(wide, deterministic=deterministic)  # [batch, length, embed]
      x = layer_norm(cfg, 'bottleneck_out_norm')(block_input + wide)
      x = nn.with_logical_constraint(x, ('batch', 'length', 'act_embed'))
    self.sow('intermediates', 'output', x)  # [batch, length, embed]: for distillation.
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
  turn them into logits, using `self.embed.attend` when the output is tied. With
  `cfg.prompt_length` = P (prompt tuning) the blocks run on P learned vectors followed by
  the row, the vectors in the row's first segment (position 0 for a relative bias), and
  the P outputs are dropped: the heads see [batch, length, embed] as without them.
  """

  cfg: TransformerConfig
  is_decoder: bool = False
  shared_token: nn.Module | None = None

  def setup(self):
    cfg = self.cfg
    depth = cfg.num_decoder_layers if self.is_decoder else cfg.num_layers
    if cfg.layer_heads is not None and (
      len(cfg.layer_heads) != depth or cfg.scan_layers or cfg.share_layers or self.is_decoder
    ):
      raise ValueError(
        f'layer_heads={cfg.layer_heads} (heads kept per layer after pruning) needs one entry '
        f'per layer ({depth}) of an encoder or decoder-only stack whose layers are looped '
        '(scan_layers and share_layers off).'
      )
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
        variable_axes={'params': 0, 'intermediates': 0, 'attention_weights': 0},
        split_rngs={'params': True, 'dropout': True},
        in_axes=(nn.broadcast,) * 5,  # mask, deterministic, bias, encoded, cross_mask
        length=depth,
        metadata_params={nn.PARTITION_NAME: 'layers'},
      )(cfg, self.is_decoder, name='blocks')
    else:
      block = block_class(cfg)
      self.blocks = [block(cfg, self.is_decoder, i, name=f'block_{i}') for i in range(depth)]
    if cfg.final_norm:
      self.final_norm = layer_norm(cfg, 'final_norm')
    if cfg.prompt_length:
      if self.is_decoder:
        raise ValueError('prompt_length applies to an encoder or a decoder-only stack.')
      self.prompt = self.param(
        'prompt', normal_init(cfg, 'prompt', 'embed', fan_in=1),
        (cfg.prompt_length, cfg.d_model), cfg.storage_dtype,
      )  # fmt: skip

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
    visible=None,
    boxes=None,
  ):
    """Args: int arrays [batch, length]; positions restart at 0 in each segment.

    A decoder also takes `encoded` [batch, enc_length, embed] and its
    `encoder_segment_ids` [batch, enc_length]: decoder segment k attends to
    encoder segment k (packed pairs stay apart). A bidirectional encoder may take
    `attention_kinds` [batch, length] (BIDIRECTIONAL, LEFT_TO_RIGHT, RIGHT_TO_LEFT
    per position, see models/attention.py `attention_kinds_mask`) in place of its
    all-bidirectional mask. A stack may take `visible` [batch, length, length] bool (K-BERT's
    visible matrix: query i sees key j), applied within the segments' mask, and `boxes`
    [batch, length, 4] (LayoutLM's 2-D positions, with `cfg.max_2d_positions`).
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
    x = self.embed(tokens, positions, token_types, deterministic, segment_ids, boxes)
    self.sow('intermediates', 'embedded', x)  # [batch, length, embed]: for distillation.
    prompt = self.cfg.prompt_length
    if prompt:  # [batch, prompt + length, ...]: the prompt joins each row's first segment.
      if attention_kinds is not None or visible is not None:
        raise ValueError('prompt_length with attention_kinds or a visible matrix is not supported.')
      width = (x.shape[0], prompt)
      vectors = jnp.broadcast_to(jnp.asarray(self.prompt, x.dtype), (*width, x.shape[-1]))
      x = jnp.concatenate([vectors, x], axis=1)
      segment_ids = jnp.concatenate([jnp.broadcast_to(segment_ids[:, :1], width), segment_ids], 1)
      positions = jnp.concatenate([jnp.zeros(width, positions.dtype), positions], 1)
    # [batch, length] arrays, not a [batch, 1, length, length] mask: see models/attention.py.
    mask = attention.SegmentMask.self_attend(
      segment_ids, causal=self.causal, kinds=attention_kinds, visible=visible
    )
    cross_mask = None
    if self.is_decoder:
      cross_mask = attention.SegmentMask.cross_attend(segment_ids, encoder_segment_ids)
    bias = self.relative_bias(positions, positions) if self.cfg.position == 'relative' else None
    args = (mask, deterministic, bias, encoded, cross_mask)
    if self.cfg.scan_layers:
      x, _ = self.scanned_blocks(x, *args)
    else:
      blocks = [self.shared_block] * self.cfg.num_layers if self.cfg.share_layers else self.blocks
      for block in blocks:
        x = block(x, *args)
    if self.cfg.final_norm:
      x = self.final_norm(x)
    return x[:, prompt:]  # The prompt's outputs are dropped: [batch, length, embed].

  def attend(self, x: jax.Array) -> jax.Array:
    return self.embed.attend(x)
