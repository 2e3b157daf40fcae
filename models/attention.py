"""Scaled dot-product attention behind one call: the XLA reference, cuDNN flash attention
(NVIDIA GPUs) and the Pallas splash-attention kernel (TPUs).

Who attends to whom travels as [batch, length] arrays, a `SegmentMask` (segment ids,
0 for padding; the causal flag; UniLM's per-position attention kinds), never as a
dense [batch, 1, q_len, kv_len] mask: the XLA reference builds that mask itself, cuDNN
gets each packed segment's length and offset, splash gets the segment ids.

`TransformerConfig.attention_impl` (config key `model.attention_impl`) picks one:

  ''        auto: cuDNN on a GPU, splash on a TPU, where the kernel computes the
            reference's function, to rounding (so not with attention dropout while
            training: neither kernel draws its masks from the step's rng); the XLA
            reference otherwise, and always on CPU.
  'xla'     the reference: fp32 logits and softmax whatever the compute dtype, dropout
            on the probabilities from the caller's rng, zeros for a query that sees
            no key (padding).
  'cudnn'   cuDNN flash attention (jax's cuDNN API, `jax._src.cudnn`): packed segments
            as per-segment lengths and offsets (cuDNN 9.6+, Hopper+), causal, an additive
            bias (T5), attention dropout inside the kernel (cuDNN's own generator).
  'splash'  the Pallas TPU splash kernel: segment ids, causal; no bias, no dropout.

Selected explicitly, a kernel that cannot compute the call raises a ValueError that
names what is missing (the hardware, a dtype, a feature); auto falls back to XLA.
"""

import math
import zlib

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from models import dropout

try:  # jax's lower-level cuDNN API; a private module, so its absence is tolerated.
  from jax._src.cudnn import fused_attention_stablehlo as _cudnn
except ImportError as error:  # pragma: no cover (present in jax 0.10)
  _cudnn, _CUDNN_IMPORT_ERROR = None, error
else:
  _CUDNN_IMPORT_ERROR = None
try:
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as _splash
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as _splash_mask
except ImportError as error:  # pragma: no cover (present in jax 0.10)
  _splash = _splash_mask = None
  _SPLASH_IMPORT_ERROR = error
else:
  _SPLASH_IMPORT_ERROR = None

IMPLEMENTATIONS = ('', 'xla', 'cudnn', 'splash')

# Per-position attention kinds of an encoder that mixes attention masks in one batch
# (UniLM, objectives/unilm.py). A BIDIRECTIONAL key is seen by every query of its
# segment; any other key only from one side: by the queries at or after it when the
# query reads LEFT_TO_RIGHT (BIDIRECTIONAL queries read so too), at or before it when
# the query reads RIGHT_TO_LEFT. So a segment of one kind is fully bidirectional,
# causal or anti-causal, and BIDIRECTIONAL source tokens followed by LEFT_TO_RIGHT
# target tokens make UniLM's sequence-to-sequence mask.
BIDIRECTIONAL, LEFT_TO_RIGHT, RIGHT_TO_LEFT = 0, 1, 2


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array, causal: bool) -> jax.Array:
  """Boolean mask [batch, 1, q_len, kv_len]: same non-padding segment (and causal).

  A padding query (segment 0) attends to nothing; attention then returns zeros for
  it, which the losses weight out anyway.
  """
  same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  mask = same & (kv_segment_ids[:, None, :] > 0)
  if causal:
    q_len, kv_len = q_segment_ids.shape[1], kv_segment_ids.shape[1]
    mask &= jnp.tril(jnp.ones((q_len, kv_len), dtype=bool))[None]
  return mask[:, None]


def attention_kinds_mask(segment_ids: jax.Array, kinds: jax.Array) -> jax.Array:
  """Boolean self-attention mask [batch, 1, length, length] from per-position kinds.

  Built on device from two [batch, length] arrays, so a mixed batch ships no
  [length, length] masks. Segments and padding are kept apart as in `attention_mask`.

  Args:
    segment_ids: [batch, length] int, 0 for padding.
    kinds: [batch, length] int, BIDIRECTIONAL, LEFT_TO_RIGHT or RIGHT_TO_LEFT.
  """
  index = jnp.arange(segment_ids.shape[1])
  before = index[None, :] <= index[:, None]  # [q_len, kv_len]: key at or before the query.
  backward = (kinds == RIGHT_TO_LEFT)[:, :, None]  # [batch, q_len, 1]
  order = jnp.where(backward, before.T[None], before[None])  # [batch, q_len, kv_len]
  order |= (kinds == BIDIRECTIONAL)[:, None, :]
  return attention_mask(segment_ids, segment_ids, causal=False) & order[:, None]


@flax.struct.dataclass
class SegmentMask:
  """Who attends to whom, in [batch, length] arrays (a pytree: it passes through jit,
  nn.scan and nn.remat). Segments are contiguous runs of one id (packing makes them so);
  a query sees the keys of its own segment, and padding (id 0) sees nothing."""

  q_segment_ids: jax.Array  # [batch, q_len] int
  kv_segment_ids: jax.Array  # [batch, kv_len] int; the same array for self-attention.
  kinds: jax.Array | None = None  # [batch, length] attention kinds (self-attention only).
  causal: bool = flax.struct.field(pytree_node=False, default=False)
  self_attention: bool = flax.struct.field(pytree_node=False, default=True)
  # Learned keys before the row's (P-tuning v2): the first `prefix` keys are seen by every
  # real query, whatever its segment, kind or causal order.
  prefix: int = flax.struct.field(pytree_node=False, default=0)
  # [batch, length, length] bool, self-attention only: query i may see key j (K-BERT's
  # visible matrix, data/knowledge.py), on top of the segments: a pair must be in the
  # same segment AND visible, so packing and padding still isolate what they isolate.
  visible: jax.Array | None = None

  @classmethod
  def self_attend(
    cls, segment_ids, *, causal: bool = False, kinds=None, visible=None
  ) -> 'SegmentMask':
    if kinds is not None and causal:
      raise ValueError('Attention kinds replace the causal flag; pass one or the other.')
    if visible is not None and visible.shape != (*segment_ids.shape, segment_ids.shape[1]):
      raise ValueError(
        f'visible {visible.shape} must be [batch, length, length] for segment ids'
        f' {segment_ids.shape}.'
      )
    return cls(segment_ids, segment_ids, kinds, causal=causal, self_attention=True,
               visible=visible)  # fmt: skip

  @classmethod
  def cross_attend(cls, q_segment_ids, kv_segment_ids) -> 'SegmentMask':
    """Query segment k sees key segment k (packed encoder-decoder pairs stay apart)."""
    return cls(q_segment_ids, kv_segment_ids, causal=False, self_attention=False)

  def dense(self) -> jax.Array:
    """The boolean mask [batch, 1, q_len, prefix + kv_len] the XLA reference applies."""
    if self.kinds is not None:
      mask = attention_kinds_mask(self.q_segment_ids, self.kinds)
    else:
      mask = attention_mask(self.q_segment_ids, self.kv_segment_ids, self.causal)
    if self.visible is not None:
      # The diagonal stays: every real token sees itself, as query_valid promises.
      diagonal = jnp.eye(self.visible.shape[-1], dtype=bool)
      mask = mask & (self.visible.astype(bool) | diagonal)[:, None]
    if not self.prefix:
      return mask
    batch, q_len = self.q_segment_ids.shape
    seen = jnp.broadcast_to(
      (self.q_segment_ids > 0)[:, None, :, None], (batch, 1, q_len, self.prefix)
    )
    return jnp.concatenate([seen, mask], axis=-1)

  def query_valid(self) -> jax.Array:
    """[batch, q_len] bool: the queries that see at least one key. In self-attention
    every real token sees itself; a cross-attention query needs its segment on the
    other side."""
    if self.self_attention:
      return self.q_segment_ids > 0
    same = self.q_segment_ids[:, :, None] == self.kv_segment_ids[:, None, :]
    return jnp.any(same & (self.kv_segment_ids[:, None, :] > 0), axis=-1)


def dot_product_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  mask: SegmentMask,
  *,
  bias: jax.Array | None = None,
  scale: float | None = None,
  dropout_rate: float = 0.0,
  dropout_rng: jax.Array | None = None,
  implementation: str | None = '',
  dropout_seed: int = 0,
  replayed_layers: bool = False,
  probs: jax.Array | None = None,
) -> jax.Array:
  """Attention of q over (k, v) where `mask` allows, by the chosen implementation.

  Args:
    q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, heads, head_dim].
    mask: who attends to whom.
    bias: [batch, heads, q_len, kv_len] added to the logits (T5's relative positions).
    scale: logit scale; None is 1 / sqrt(head_dim).
    dropout_rate: dropout on the attention probabilities (0 when not training).
    dropout_rng: the key of that dropout (XLA reference).
    implementation: '' (auto), 'xla', 'cudnn' or 'splash'; None is auto.
    dropout_seed: cuDNN's compile-time dropout seed (one per layer).
    replayed_layers: the layer runs in a loop (nn.scan) or is shared across depths;
      cuDNN's dropout generator cannot follow it there.
    probs: `attention_probabilities(q, k, mask, bias=bias, scale=scale)`, when the
      caller computed them (to keep them): the XLA reference applies these, not a copy.

  Returns:
    [batch, q_len, heads, head_dim], zeros for the queries that see no key.
  """
  scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
  name = select_implementation(
    implementation, q, k, mask, bias=bias, dropout_rate=dropout_rate,
    replayed_layers=replayed_layers,
  )  # fmt: skip
  if name == 'cudnn':
    return cudnn_attention(
      q, k, v, mask, bias=bias, scale=scale, dropout_rate=dropout_rate, dropout_seed=dropout_seed
    )
  if name == 'splash':
    return splash_attention(q, k, v, mask, scale=scale)
  return xla_attention(
    q, k, v, mask, bias=bias, scale=scale, dropout_rate=dropout_rate, dropout_rng=dropout_rng,
    probs=probs,
  )  # fmt: skip


def select_implementation(
  implementation: str | None,
  q: jax.Array,
  k: jax.Array,
  mask: SegmentMask,
  *,
  bias=None,
  dropout_rate: float = 0.0,
  replayed_layers: bool = False,
  platform: str | None = None,
) -> str:
  """The implementation that will run: 'xla', 'cudnn' or 'splash' (see the module doc).

  `platform` defaults to JAX's default backend ('cpu', 'gpu', 'tpu').
  """
  implementation = implementation or ''
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(
      f'Unknown attention_impl {implementation!r}; expected one of'
      f" {', '.join(map(repr, IMPLEMENTATIONS))} ('' picks by platform)."
    )
  if implementation == 'xla':
    return 'xla'
  platform = platform or jax.default_backend()
  problem_of = {'cudnn': _cudnn_problem, 'splash': _splash_problem}
  if implementation:
    problem = problem_of[implementation](platform, q, k, mask, bias, dropout_rate, replayed_layers)
    if problem:
      raise ValueError(
        f'attention_impl={implementation!r} cannot compute this attention: {problem}.'
      )
    return implementation
  # Auto: a kernel only where it computes the reference's function (to rounding), dropout
  # masks included.
  fused = {'gpu': 'cudnn', 'tpu': 'splash'}.get(platform)
  if fused is None or dropout_rate > 0:
    return 'xla'
  problem = problem_of[fused](platform, q, k, mask, bias, dropout_rate, replayed_layers)
  return 'xla' if problem else fused


def _length_sharded() -> bool:
  """Whether the logical rules in effect split the `length` axis over a mesh axis of
  more than one device (sequence parallelism, training/partitioning.py)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return False
  axes = nn.logical_to_mesh_axes(('length',))[0]
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return math.prod(mesh.shape.get(a, 1) for a in axes) > 1


def _cudnn_problem(platform, q, k, mask, bias, dropout_rate, replayed_layers) -> str:
  """Why cuDNN flash attention cannot compute this call ('' when it can)."""
  if _cudnn is None:
    return f'jax._src.cudnn does not import ({_CUDNN_IMPORT_ERROR})'
  if platform != 'gpu':
    return (
      f'it needs an NVIDIA GPU with cuDNN (jax[cuda12]), and this process runs on'
      f" {platform!r}; use attention_impl='xla' or '' (auto)"
    )
  try:
    version = _cudnn.check_cudnn_version()
  except RuntimeError as error:
    return f'cuDNN was not found ({error})'
  # Packed (ragged) sequences: cuDNN 9.6 and a Hopper GPU (jax's own packed-layout test).
  if version < 90600:
    return f'packed sequences need cuDNN 9.6 or newer, and this is cuDNN {version}'
  if not _cudnn.check_compute_capability('9.0'):
    return 'packed sequences need a Hopper (sm_90) or newer GPU'
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    return (
      f'cuDNN flash attention takes bfloat16 or float16, got {q.dtype}: set model.dtype=bfloat16'
    )
  head_dim = q.shape[-1]
  if head_dim % 8 or head_dim > 256:
    return f'the head dimension must be a multiple of 8 and at most 256, got {head_dim}'
  if mask.kinds is not None:
    return "per-position attention kinds (UniLM) are no segment lengths; use attention_impl='xla'"
  if mask.visible is not None:
    return "a visible matrix (K-BERT) is no segment lengths; use attention_impl='xla'"
  if mask.prefix:
    return (
      "learned key/value prefixes (model.prefix_length) are not segments; use attention_impl='xla'"
    )
  if dropout_rate > 0 and replayed_layers:
    return (
      'cuDNN draws attention dropout from a per-layer generator that a scanned or shared'
      ' stack (model.scan_layers / share_layers) would replay out of step with its'
      " backward pass; unroll the layers or use attention_impl='xla'"
    )
  if _length_sharded():
    return 'the length axis is sharded (mesh.sequence > 1), which cuDNN does not split'
  return ''


def _splash_problem(platform, q, k, mask, bias, dropout_rate, replayed_layers) -> str:
  """Why the splash kernel cannot compute this call ('' when it can)."""
  del replayed_layers
  if _splash is None:
    return (
      f'jax.experimental.pallas.ops.tpu.splash_attention does not import ({_SPLASH_IMPORT_ERROR})'
    )
  if platform != 'tpu':
    return f"it needs a TPU, and this process runs on {platform!r}; use attention_impl='xla' or ''"
  if dropout_rate > 0:
    return "splash attention has no dropout: set model.dropout_rate=0 or use 'xla'"
  if bias is not None:
    return "splash attention takes no additive bias (T5's relative positions); use 'xla'"
  if mask.kinds is not None:
    return "per-position attention kinds (UniLM) are not splash masks; use 'xla'"
  if mask.visible is not None:
    return "a visible matrix (K-BERT) is not a splash mask; use 'xla'"
  if mask.prefix:
    return "learned key/value prefixes (model.prefix_length) are not splash masks; use 'xla'"
  q_len, kv_len = q.shape[1], k.shape[1]
  if q_len % 128 or kv_len % 128:
    return f'sequence lengths must be multiples of 128, got {q_len} queries and {kv_len} keys'
  if _length_sharded():
    return 'the length axis is sharded (mesh.sequence > 1); splash runs here unsharded'
  return ''


def attention_probabilities(q, k, mask: SegmentMask, *, bias=None, scale) -> jax.Array:
  """The attention distributions [batch, heads, q_len, kv_len] (fp32) the XLA reference
  applies: softmax over the keys `mask` allows of the scaled (and biased) fp32 logits.
  Each row sums to 1, except a query that sees no key (padding): its row is uniform, and
  its attention output is zeroed by the caller."""
  dense = mask.dense()  # [batch, 1, q_len, kv_len]
  # The products run on [batch, heads, length, head_dim] views: XLA's CPU backend multiplies
  # batched matrices 2-3x faster with both batch axes leading than on [batch, length,
  # heads, head_dim] operands (all-MiniLM-L6-v2's forward at 32 x 128: 773 -> 533 ms).
  q_heads, k_heads = jnp.swapaxes(q, 1, 2), jnp.swapaxes(k, 1, 2)
  logits = jnp.einsum('bhqd,bhkd->bhqk', q_heads, k_heads, preferred_element_type=jnp.float32)
  logits *= jnp.asarray(scale, logits.dtype)
  if bias is not None:
    logits = (logits + bias).astype(logits.dtype)
  large_negative = -0.7 * jnp.finfo(jnp.float32).max  # jax.nn's value: finite in fp32.
  logits = jnp.where(dense, logits, jnp.asarray(large_negative, logits.dtype))
  return softmax(logits.astype(jnp.float32))


@jax.custom_jvp
def softmax(logits: jax.Array) -> jax.Array:
  """jax.nn.softmax over the last axis, the same values bit for bit, differentiated by
  the softmax's own rule: d probs = probs * (d logits - sum(probs * d logits)).

  jax.nn.softmax differentiates through its exp, sum and division instead unless
  `jax_softmax_custom_jvp` is set (it is off by default in JAX 0.10), and XLA's CPU
  backend runs that backward about 30% slower: one all-MiniLM-L6-v2 attention core
  (QK^T, softmax, PV at 32 x 12 x 128 x 128) took 64 ms forward and backward with it,
  48 ms with this (PyTorch: 27 ms). The gradients agree to float32 rounding."""
  unnormalized = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
  (logits,), (logits_dot,) = primals, tangents
  probs = softmax(logits)
  return probs, probs * (logits_dot - jnp.sum(probs * logits_dot, axis=-1, keepdims=True))


def xla_attention(
  q, k, v, mask: SegmentMask, *, bias=None, scale, dropout_rate=0.0, dropout_rng=None, probs=None
):
  """The reference: the numerics of jax.nn.dot_product_attention's XLA path (logits and
  softmax in fp32, probabilities cast back to the compute dtype), plus dropout on the
  probabilities (models/dropout.py: keep at the realized rate, scaled to an exact
  expectation, drawn from `dropout_rng`
  over [batch, heads, q_len, kv_len]) and zeros for the queries that see no key.

  `probs`, when given, is `attention_probabilities` of the same call, computed once by a
  caller that also keeps them (models/transformer.py's 'attention_weights')."""
  if probs is None:
    probs = attention_probabilities(q, k, mask, bias=bias, scale=scale)
  probs = probs.astype(v.dtype)
  if dropout_rate > 0:
    if dropout_rng is None:
      raise ValueError(f'Attention dropout {dropout_rate} needs a dropout_rng.')
    probs = dropout.apply(probs, dropout_rate, dropout_rng)
  out = jnp.einsum('bhqk,bhkd->bhqd', probs, jnp.swapaxes(v, 1, 2))  # Heads leading, as above.
  out = jnp.swapaxes(out, 1, 2)  # [batch, q_len, heads, head_dim]
  sees_a_key = mask.dense().any(axis=-1).transpose(0, 2, 1)[..., None]  # [batch, q_len, 1, 1]
  return jnp.where(sees_a_key, out, 0)


def cudnn_segments(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Segment ids -> cuDNN's packed layout: (lengths [batch, M], offsets [batch, M + 1]).

  Slot s - 1 holds segment id s (M = length, enough for any packing): its length and
  first position, or -1 where the row has no segment s (cuDNN skips those).
  """
  batch, length = segment_ids.shape
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
  ids = segment_ids.astype(jnp.int32)
  counts = jax.vmap(lambda s: jnp.zeros(length + 1, jnp.int32).at[s].add(1))(ids)
  starts = jax.vmap(lambda s, p: jnp.full(length + 1, length, jnp.int32).at[s].min(p))(
    ids, positions
  )
  present = counts[:, 1:] > 0  # [batch, M]: id 0 (padding) is no segment.
  lengths = jnp.where(present, counts[:, 1:], -1)
  offsets = jnp.where(present, starts[:, 1:], -1)
  offsets = jnp.concatenate([offsets, jnp.full((batch, 1), -1, jnp.int32)], axis=1)
  return lengths, offsets


def cudnn_attention(
  q, k, v, mask: SegmentMask, *, bias=None, scale, dropout_rate=0.0, dropout_seed=0
):
  """cuDNN flash attention over packed segments (jax's lower-level cuDNN API).

  Each segment is a sequence of cuDNN's packed (ragged) layout, so no [q_len, kv_len]
  mask exists; causal is cuDNN's causal mask within each segment. Dropout is drawn by
  cuDNN from `dropout_seed` and a counter XLA advances on every run of the step, not
  from the step's rng: the masks are not a function of (seed, step).
  """
  q_lengths, q_offsets = cudnn_segments(mask.q_segment_ids)
  kv_lengths, kv_offsets = cudnn_segments(mask.kv_segment_ids)
  mask_type = _cudnn.MaskType.CAUSAL if mask.causal else _cudnn.MaskType.NO_MASK
  out = _cudnn.dot_product_attention(
    q,
    k,
    v,
    None if bias is None else bias.astype(q.dtype),
    None,
    q_lengths,
    kv_lengths,
    q_offsets,
    kv_offsets,
    scale=float(scale),
    mask_type=mask_type,
    seed=int(dropout_seed),
    dropout_rate=float(dropout_rate),
    qkv_layout='BTNH',
  )
  return jnp.where(mask.query_valid()[:, :, None, None], out, 0)


def _block(length: int) -> int:
  """The largest of splash's usual tile sizes that divides `length` (a multiple of 128)."""
  return next(b for b in (512, 256, 128) if length % b == 0)


def splash_attention(q, k, v, mask: SegmentMask, *, scale, interpret: bool = False):
  """The Pallas TPU splash kernel with segment ids (and its causal mask).

  Padding queries attend among the padding keys (splash needs every row to see a key)
  and are zeroed after. `interpret` runs the kernel in Pallas' interpreter (on CPU, for
  tests).
  """
  q_len, heads = q.shape[1], q.shape[2]
  kv_len = k.shape[1]
  shape = (q_len, kv_len)
  base = _splash_mask.CausalMask(shape) if mask.causal else _splash_mask.FullMask(shape)
  bq, bkv = _block(q_len), _block(kv_len)
  sizes = _splash.BlockSizes(
    block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
    block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv,
  )  # fmt: skip
  kernel = _splash.make_splash_mha(
    _splash_mask.MultiHeadMask([base] * heads),
    block_sizes=sizes,
    head_shards=1,
    q_seq_shards=1,
    interpret=interpret,
  )
  heads_first = lambda t: t.transpose(0, 2, 1, 3)  # noqa: E731  [batch, heads, len, head_dim]
  scaled_q = (q * jnp.asarray(scale, q.dtype)).astype(q.dtype)

  def one_row(q, k, v, q_segments, kv_segments):
    return kernel(q, k, v, segment_ids=_splash.SegmentIds(q=q_segments, kv=kv_segments))

  out = jax.vmap(one_row)(
    heads_first(scaled_q), heads_first(k), heads_first(v), mask.q_segment_ids, mask.kv_segment_ids
  )
  out = heads_first(out).astype(q.dtype)  # [batch, q_len, heads, head_dim]
  return jnp.where(mask.query_valid()[:, :, None, None], out, 0)


def layer_seed(path: tuple[str, ...]) -> int:
  """A compile-time seed per module path (cuDNN's dropout), the same in every process."""
  return zlib.crc32('/'.join(path).encode())
