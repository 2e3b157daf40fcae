"""Quantization arithmetic of the block matmuls (models/transformer.py `Projection`).

Symmetric, round-to-nearest, integer grids {-qmax, ..., qmax} with qmax = 2**(bits-1) - 1
(8 bits: 127; 4 bits: 7; 3 bits: 3; 2 bits: ternary {-1, 0, 1}); a scale maps the largest
magnitude of its group onto qmax, so nothing is clipped.

A kernel [in..., out...] is read as a matrix [K, N] (K = prod(in), N = prod(out), row-
major, as the matmul contracts it). Its scales are per output channel and per group of
`group_size` consecutive input rows: `kernel_scale` [K / group_size, out...] (one group:
per output channel). A group size that divides the head size keeps the groups of the
attention output projection ([heads, kv, embed]) inside one head: Q-BERT's groups of rows
per head (Shen et al. 2020); query / key / value ([embed, heads, kv]) have a scale per
output channel, inside one head by construction.

What runs:
- `int8_matmul`: int8 inputs (one calibrated scale per tensor) x int8 kernel (per output
  channel), `lax.dot_general` accumulating in int32, rescaled to float once;
- `weight_only_matmul`: int8 or bit-packed (2 or 4 bits per weight, `pack`) kernels,
  dequantized to the compute dtype inside the jitted matmul;
- `fake_quantize`: quantization-aware training's forward rounding with a straight-through
  gradient.

Storage: weights of at most 4 bits are packed along the kernel's last input axis, two
4-bit (3-bit values use the 4-bit container) or four 2-bit weights per uint8 byte. Packing
is ours: jnp.int4 arrays do round-trip through Orbax 0.12.8 / tensorstore, but are written
one byte per weight (a 1M-weight int4 array and an int8 array of the same values in [-8, 8)
both took 525,954 bytes after tensorstore's compression; zeros took 1,476): what made them
small was the compression of one-byte values, not packing. A packed kernel is half a byte
per weight before any compression, in memory as on disk.

The host-side conversion of a float model (`quantize_tree`) and Q-BERT's allocation of
bits over layers (`assign_bits`) are here too, as arithmetic on NumPy trees: what
compress.py calls.
"""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# TransformerConfig.quant: '' float, 'fake' (QAT), 'int8' (weights and inputs), 'weight'.
MODES = ('', 'fake', 'int8', 'weight')
INT8_BITS = 8
# The calibration collection: each Projection's largest input magnitude of a forward pass.
CALIBRATION = 'calibration'
INPUT_MAX = 'input_max'


def qmax(bits: int) -> int:
  """The largest integer of the symmetric `bits`-bit grid."""
  if not 2 <= bits <= 8:
    raise ValueError(f'bits={bits}: quantization supports 2 to 8 bits.')
  return 2 ** (bits - 1) - 1


def container_bits(bits: int) -> int:
  """Bits a stored weight takes: 2, 4 (3- and 4-bit weights) or 8."""
  qmax(bits)
  return 2 if bits <= 2 else 4 if bits <= 4 else 8


def per_byte(bits: int) -> int:
  """Weights packed into one stored byte."""
  return 8 // container_bits(bits)


def group_count(rows: int, group_size: int) -> int:
  """Groups of `group_size` input rows in a kernel of `rows` input rows (0: one group)."""
  size = group_size or rows
  if size <= 0 or rows % size:
    raise ValueError(
      f'group_size={group_size} must divide the {rows} input rows of the kernel (0: one '
      'scale per output channel).'
    )
  return rows // size


def _as_matrix(kernel, n_in: int):
  rows = math.prod(kernel.shape[:n_in])
  return kernel.reshape(rows, -1), rows


def quantize(kernel, n_in: int, bits: int, group_size: int = 0):
  """(int8 codes in the kernel's shape, float32 scales [groups, out...]).

  Args:
    kernel: [in..., out...] float weights.
    n_in: how many leading axes are inputs (contracted).
    bits: 2 to 8.
    group_size: input rows per scale (0: the whole column, per output channel).
  """
  xp = jnp if isinstance(kernel, jax.Array) else np
  matrix, rows = _as_matrix(kernel.astype(xp.float32), n_in)  # [K, N]
  groups = group_count(rows, group_size)
  grouped = matrix.reshape(groups, rows // groups, -1)  # [groups, G, N]
  top = xp.max(xp.abs(grouped), axis=1)  # [groups, N]
  scale = xp.where(top > 0, top / qmax(bits), 1.0).astype(xp.float32)
  codes = xp.clip(xp.round(grouped / scale[:, None, :]), -qmax(bits), qmax(bits))
  codes = codes.astype(xp.int8).reshape(kernel.shape)
  return codes, scale.reshape(groups, *kernel.shape[n_in:])


def dequantize(codes, scale, n_in: int, dtype=jnp.float32):
  """The float kernel of `quantize`'s codes [in..., out...] and scales [groups, out...]."""
  matrix, rows = _as_matrix(codes, n_in)
  groups = scale.shape[0]
  grouped = matrix.reshape(groups, rows // groups, -1).astype(dtype)
  weights = grouped * scale.reshape(groups, 1, -1).astype(dtype)  # [groups, G, N]
  return weights.reshape(codes.shape)


def pack(codes, n_in: int, bits: int):
  """int8 codes [in..., out...] -> uint8 [in[:-1], in[-1] / per_byte, out...] (bits <= 4).

  Consecutive weights along the last input axis share a byte, the first in the low bits.
  """
  xp = jnp if isinstance(codes, jax.Array) else np
  width, count = container_bits(bits), per_byte(bits)
  axis = n_in - 1
  if codes.shape[axis] % count:
    raise ValueError(
      f'{bits}-bit weights are packed {count} per byte along the last input axis; its size '
      f'{codes.shape[axis]} is not a multiple of {count}.'
    )
  shape = codes.shape[:axis] + (codes.shape[axis] // count, count) + codes.shape[axis + 1 :]
  parts = codes.reshape(shape).astype(xp.uint8) & xp.uint8(2**width - 1)
  shifts = xp.arange(count, dtype=xp.uint8) * xp.uint8(width)
  shifts = shifts.reshape((1,) * (axis + 1) + (count,) + (1,) * (codes.ndim - axis - 1))
  return xp.sum(parts << shifts, axis=axis + 1, dtype=xp.uint8)


def unpack(packed, n_in: int, bits: int):
  """uint8 bytes of `pack` -> int8 codes [in..., out...] (sign-extended)."""
  xp = jnp if isinstance(packed, jax.Array) else np
  width, count = container_bits(bits), per_byte(bits)
  axis = n_in - 1
  as_int = packed.astype(xp.int8)[(slice(None),) * (axis + 1) + (None,)]  # [..., 1, out...]
  shifts = xp.arange(count, dtype=xp.int8) * width
  shifts = shifts.reshape((1,) * (axis + 1) + (count,) + (1,) * (packed.ndim - axis - 1))
  # Each field moved to the top of the byte, then an arithmetic shift right sign-extends it.
  fields = (as_int << (8 - width - shifts).astype(xp.int8)) >> xp.int8(8 - width)
  shape = packed.shape[:axis] + (packed.shape[axis] * count,) + packed.shape[axis + 1 :]
  return fields.astype(xp.int8).reshape(shape)


def stored_kernel_shape(shape: tuple[int, ...], n_in: int, bits: int) -> tuple[int, ...]:
  """The shape a `bits`-bit kernel of `shape` is stored in (packed along its last input)."""
  count = per_byte(bits)
  axis = n_in - 1
  return shape[:axis] + (shape[axis] // count,) + shape[axis + 1 :]


def _contract(x_ndim: int, n_in: int):
  return ((tuple(range(x_ndim - n_in, x_ndim)), tuple(range(n_in))), ((), ()))


def quantize_input(x, input_scale):
  """int8 codes of activations `x` on one per-tensor scale (clipped at +-127)."""
  q = jnp.round(x.astype(jnp.float32) / input_scale)
  return jnp.clip(q, -qmax(INT8_BITS), qmax(INT8_BITS)).astype(jnp.int8)


def int8_matmul(x, codes, kernel_scale, input_scale, n_in: int, dtype=jnp.float32):
  """x [..., in...] @ an int8 kernel, the product computed in integers.

  Args:
    x: float activations; quantized here on `input_scale` (a calibrated scalar).
    codes: int8 kernel [in..., out...].
    kernel_scale: float32 [1, out...]: one scale per output channel.
    input_scale: float32 scalar.
    n_in: input axes of the kernel.
    dtype: of the result.

  Returns:
    [..., out...]: int8 x int8 products summed in int32, times input_scale x kernel_scale.
  """
  if kernel_scale.shape[0] != 1:
    raise ValueError(
      f'int8 matmuls take one scale per output channel; this kernel has {kernel_scale.shape[0]} '
      'groups of rows (use weight-only quantization for groups).'
    )
  xq = quantize_input(x, input_scale)  # [..., in...] int8
  dims = _contract(x.ndim, n_in)
  acc = jax.lax.dot_general(xq, codes, dims, preferred_element_type=jnp.int32)  # [..., out...]
  return (acc.astype(jnp.float32) * (input_scale * kernel_scale[0])).astype(dtype)


def weight_only_matmul(x, stored, kernel_scale, n_in: int, bits: int, dtype=jnp.float32):
  """x [..., in...] @ a `bits`-bit kernel (int8, or uint8 packed for <= 4 bits), the
  kernel dequantized to `dtype` inside the jitted computation (XLA fuses it)."""
  codes = stored if container_bits(bits) == 8 else unpack(stored, n_in, bits)
  kernel = dequantize(codes, kernel_scale, n_in, dtype)
  return jax.lax.dot_general(x.astype(dtype), kernel, _contract(x.ndim, n_in))


def fake_quantize(x, scale, bits: int):
  """x rounded to the `bits`-bit grid of `scale` in the forward pass, identity in the
  backward pass (the straight-through estimator).

  Written as x + stop_gradient(q(x) - x) rather than a jax.custom_vjp: the trick is an
  ordinary function of x for every transformation, forward mode included, so Hessian-
  vector products (training/hessian.py, jvp of grad) and remat go through a fake-
  quantized model; a custom_vjp function has no jvp rule. The scale covers the largest
  magnitude (no clipping), so the straight-through gradient is exactly 1 everywhere.
  """
  scale = jax.lax.stop_gradient(scale)
  q = jnp.clip(jnp.round(x / scale), -qmax(bits), qmax(bits)) * scale
  return x + jax.lax.stop_gradient(q - x)


def fake_quantize_kernel(kernel, n_in: int, bits: int, group_size: int = 0):
  """A float kernel on its per-output-channel (per-group) grid, straight-through."""
  matrix, rows = _as_matrix(kernel, n_in)
  groups = group_count(rows, group_size)
  grouped = matrix.reshape(groups, rows // groups, -1)  # [groups, G, N]
  top = jnp.max(jnp.abs(grouped), axis=1, keepdims=True)
  scale = jnp.where(top > 0, top / qmax(bits), 1.0)
  return fake_quantize(grouped, scale, bits).reshape(kernel.shape)


def fake_quantize_input(x, bits: int):
  """Activations on one per-tensor grid from their own largest magnitude, straight-
  through (the static scale of `int8_matmul` is calibrated the same way)."""
  top = jnp.max(jnp.abs(x))
  return fake_quantize(x, jnp.where(top > 0, top / qmax(bits), 1.0), bits)


_LAYER = re.compile(r'block_(\d+)$')


def layer_of(path) -> int | None:
  """The layer index of a module or parameter path ('encoder', 'block_3', ...), if any."""
  for part in path:
    match = _LAYER.match(str(part))
    if match:
      return int(match.group(1))
  return None


def flatten(tree, prefix=()) -> dict:
  """{path tuple: leaf} of a nested dict."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, (*prefix, key)))
    return out
  return {prefix: tree}


def unflatten(flat: dict) -> dict:
  """The nested dict of `flatten`'s {path tuple: leaf}."""
  tree = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def projection_paths(tree: dict) -> list[tuple]:
  """Module paths of the quantized projections of a params tree (those with a scale)."""
  return sorted(path[:-1] for path in flatten(tree) if path[-1] == 'kernel_scale')


def quantize_rows(table) -> tuple[np.ndarray, np.ndarray]:
  """An embedding table [rows, width] as int8 codes and one float32 scale per row."""
  table = np.asarray(table, np.float32)
  top = np.max(np.abs(table), axis=-1)  # [rows]
  scale = np.where(top > 0, top / qmax(INT8_BITS), 1.0).astype(np.float32)
  codes = np.clip(np.round(table / scale[:, None]), -qmax(INT8_BITS), qmax(INT8_BITS))
  return codes.astype(np.int8), scale


class QuantizedEmbed(nn.Module):
  """A token table of int8 rows, one scale per row: looked up, and (tied output)
  attended, in the compute dtype. Its params (`embedding` int8 [rows, width],
  `embedding_scale` [rows]) are written by `quantize_tree`; the inits give shapes only."""

  num_embeddings: int
  features: int
  names: tuple[str, str]  # Logical names of the table's axes.
  dtype: str = 'float32'

  def setup(self):
    shape = (self.num_embeddings, self.features)
    zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), self.names)
    ones = nn.with_logical_partitioning(nn.initializers.ones_init(), self.names[:1])
    self.embedding = self.param('embedding', zeros, shape, jnp.int8)
    self.embedding_scale = self.param('embedding_scale', ones, shape[:1], jnp.float32)

  def __call__(self, ids):
    rows = jnp.take(self.embedding, ids, axis=0).astype(self.dtype)  # [..., width]
    return rows * jnp.take(self.embedding_scale, ids, axis=0)[..., None].astype(self.dtype)

  def attend(self, query):
    """[..., width] -> [..., rows]: the query against every (dequantized) row."""
    table = self.embedding.astype(self.dtype) * self.embedding_scale[:, None].astype(self.dtype)
    return jnp.dot(query.astype(self.dtype), table.T)


def quantize_tree(
  params: dict, target: dict, bits_of, input_max: dict | None = None
) -> dict[tuple, np.ndarray]:
  """The float `params` of a model converted to the quantized model's layout `target`.

  Args:
    params: nested dict of float NumPy arrays (the source model, layers looped).
    target: the quantized model's params as ShapeDtypeStructs (jax.eval_shape of its
      init): a projection with 'kernel_scale' there is quantized, every other leaf is
      copied and must have the same shape.
    bits_of: module path -> bits of that projection's weights.
    input_max: {module path: largest input magnitude} from calibration, for the int8
      projections ('input_scale').

  Returns:
    A nested dict of NumPy arrays matching `target` leaf for leaf (shapes and dtypes).

  Raises:
    ValueError: a leaf missing on either side, a shape that does not match, or an int8
      projection without a calibrated input range.
  """
  source, wanted = flatten(params), flatten(target)
  out = {}
  quantized = set(projection_paths(target))
  tables = {path[:-1] for path in wanted if path[-1] == 'embedding_scale'}
  for module in tables:  # QuantizedEmbed: int8 rows, a scale each.
    codes, scale = quantize_rows(source[(*module, 'embedding')])
    out[(*module, 'embedding')], out[(*module, 'embedding_scale')] = codes, scale
  for path, spec in wanted.items():
    module, name = path[:-1], path[-1]
    if module in quantized and name in ('kernel', 'kernel_scale', 'input_scale'):
      continue
    if module in tables:
      continue
    if path not in source:
      raise ValueError(f'The quantized model has {"/".join(path)}, the source model does not.')
    out[path] = np.asarray(source[path], spec.dtype)
  for module in quantized:
    kernel = np.asarray(source[(*module, 'kernel')], np.float32)
    scale_spec = wanted[(*module, 'kernel_scale')]
    stored = wanted[(*module, 'kernel')]
    n_in = kernel.ndim - (len(scale_spec.shape) - 1)
    rows = math.prod(kernel.shape[:n_in])
    bits = bits_of(module)
    codes, scale = quantize(kernel, n_in, bits, rows // scale_spec.shape[0])
    if tuple(stored.shape) != kernel.shape:
      codes = pack(codes, n_in, bits)
    out[(*module, 'kernel')], out[(*module, 'kernel_scale')] = codes, scale
    if (*module, 'input_scale') in wanted:
      if input_max is None or module not in input_max:
        raise ValueError(f'No calibrated input range for the int8 projection {"/".join(module)}.')
      top = float(input_max[module])
      out[(*module, 'input_scale')] = np.float32(top / qmax(INT8_BITS) if top > 0 else 1.0)
  for path, spec in wanted.items():
    value = out[path]
    if tuple(value.shape) != tuple(spec.shape) or value.dtype != spec.dtype:
      raise ValueError(
        f'{"/".join(path)}: converted to {value.dtype}{list(value.shape)}, the quantized '
        f'model takes {spec.dtype}{list(spec.shape)}.'
      )
  unused = sorted(set(source) - {(*m, 'kernel') for m in quantized} - set(out))
  if unused:
    raise ValueError(f'The quantized model has no {"/".join(unused[0])} (of the source model).')
  return unflatten(out)


def quantization_error(kernel: np.ndarray, n_in: int, bits: int, group_size: int = 0) -> float:
  """Squared error ||W - Q(W)||^2 of one kernel on the `bits`-bit grid."""
  codes, scale = quantize(np.asarray(kernel, np.float32), n_in, bits, group_size)
  return float(np.sum(np.square(dequantize(codes, scale, n_in, np.float32) - kernel)))


def assign_bits(
  sensitivity: list[float],
  sizes: list[int],
  errors: list[dict[int, float]],
  choices: tuple[int, ...],
  budget: float,
) -> list[int]:
  """Q-BERT's mixed precision: bits per layer under an average-bits budget.

  The loss increase of quantizing layer i to b bits is modelled, to second order, as
  sensitivity_i x errors_i[b] (Q-BERT's sensitivity: the top Hessian eigenvalue of the
  layer, |mean| + std over batches; errors: ||W - Q_b(W)||^2 of its weights). Starting
  from the fewest bits everywhere, the layer whose next step up in `choices` removes the
  most modelled loss per added bit is upgraded, while the average bits per weight (sizes
  weighing the layers) stays within `budget`. With equal sizes and errors a layer with a
  larger eigenvalue never gets fewer bits.

  Returns:
    Bits of each layer, in layer order.

  Raises:
    ValueError: a budget below the fewest bits or choices outside 2..8.
  """
  choices = tuple(sorted(set(choices)))
  for bits in choices:
    qmax(bits)
  if budget < choices[0]:
    raise ValueError(f'budget={budget} average bits is below the fewest of bits={choices}.')
  bits = [choices[0]] * len(sizes)
  total = float(sum(sizes))
  used = choices[0] * total
  while True:
    best, best_gain = None, -1.0
    for i, b in enumerate(bits):
      if b == choices[-1]:
        continue
      up = choices[choices.index(b) + 1]
      cost = (up - b) * sizes[i]
      if used + cost > budget * total + 1e-9:
        continue
      gain = sensitivity[i] * (errors[i][b] - errors[i][up]) / cost
      if gain > best_gain:
        best, best_gain = i, gain
    if best is None:
      return bits
    up = choices[choices.index(bits[best]) + 1]
    used += (up - bits[best]) * sizes[best]
    bits[best] = up
