"""The floor a step's matrix products set: each dot_general of a jitted function, timed
alone, in XLA and in PyTorch on the same shapes (issue 18).

A step can be no faster than its products run one at a time, and two frameworks' steps
can differ only by as much as their GEMM libraries plus everything else each does. This
module reads the products from the function's jaxpr (every `dot_general`, inside jit,
custom-VJP, remat and cond bodies too; a scan's body counted `length` times), then times
each distinct (operand shapes, dimension numbers, dtype) with fresh random operands, its
fastest of `repeats` calls (a shared machine's load only ever slows a product down):

  xla     jax.jit(lax.dot_general) on this process's default device;
  torch   torch.einsum of the same contraction (its own transposes and copies included,
          as XLA's are), with its default intra-op threads.

Shapes are the jaxpr's, i.e. global: on a one-device mesh (this CPU's bench) they are
the products the device runs.

  python -m bench.finetune_vs_torch --init_from /tmp/minilm --gemm_floor ...

prints the floor of each head's step next to the step times.
"""

import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jax_core

_LETTERS = 'abcdefghijklmnopqrstuvwxyz'


@dataclasses.dataclass(frozen=True)
class Product:
  """One dot_general's signature: operand shapes, dimension numbers
  (((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))) and operand dtype."""

  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  dimension_numbers: tuple
  dtype: str

  @property
  def flops(self) -> float:
    """2 x (every lhs element) x (the rhs's free elements)."""
    (_, rhs_contracting), (_, rhs_batch) = self.dimension_numbers
    rhs_free = [n for i, n in enumerate(self.rhs) if i not in (*rhs_contracting, *rhs_batch)]
    return 2.0 * float(np.prod(self.lhs)) * float(np.prod(rhs_free))

  def einsum(self) -> str:
    """The contraction as an einsum spec whose output order is dot_general's:
    batch axes, lhs free axes, rhs free axes."""
    (lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch) = self.dimension_numbers
    lhs = list(_LETTERS[: len(self.lhs)])
    rhs = [''] * len(self.rhs)
    pairs = (
      *zip(lhs_contracting, rhs_contracting, strict=True),
      *zip(lhs_batch, rhs_batch, strict=True),
    )
    for i, j in pairs:
      rhs[j] = lhs[i]
    fresh = iter(_LETTERS[len(self.lhs) :])
    rhs = [name or next(fresh) for name in rhs]
    out = [lhs[i] for i in lhs_batch]
    out += [lhs[i] for i in range(len(lhs)) if i not in (*lhs_contracting, *lhs_batch)]
    out += [rhs[j] for j in range(len(rhs)) if j not in (*rhs_contracting, *rhs_batch)]
    return f'{"".join(lhs)},{"".join(rhs)}->{"".join(out)}'


def _flops(counts: collections.Counter) -> float:
  return sum(product.flops * n for product, n in counts.items())


def _sub_jaxprs(eqn) -> list[tuple[jax_core.Jaxpr, int]]:
  """(body, times it runs per run of `eqn`) for the jaxprs a non-cond equation calls."""
  if eqn.primitive.name == 'while':
    raise ValueError('A while loop runs its body an unknown number of times: no floor.')
  times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
  found = []
  for value in eqn.params.values():
    for item in value if isinstance(value, list | tuple) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        found.append((item.jaxpr, times))
      elif isinstance(item, jax_core.Jaxpr):
        found.append((item, times))
  return found


def _count(jaxpr: jax_core.Jaxpr) -> collections.Counter:
  counts = collections.Counter()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      lhs, rhs = (v.aval for v in eqn.invars)
      dims = eqn.params['dimension_numbers']
      dims = tuple(tuple(tuple(int(i) for i in axes) for axes in pair) for pair in dims)
      counts[Product(tuple(lhs.shape), tuple(rhs.shape), dims, str(lhs.dtype))] += 1
    elif eqn.primitive.name == 'cond':  # One branch runs: count the one with the most FLOPs.
      counts.update(max((_count(b.jaxpr) for b in eqn.params['branches']), key=_flops))
    else:
      for body, times in _sub_jaxprs(eqn):
        for product, n in _count(body).items():
          counts[product] += n * times
  return counts


def step_products(fn, *args) -> collections.Counter:
  """{Product: how many times one call of `fn(*args)` runs it}. `fn` is a function, or a
  jitted one with `.trace` (training/state.py's steps trace under their mesh)."""
  traced = fn.trace(*args).jaxpr if hasattr(fn, 'trace') else jax.make_jaxpr(fn)(*args)
  return _count(traced.jaxpr)


def _fastest_seconds(call, repeats: int) -> float:
  call()  # Compilation and first-touch excluded.
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    best = min(best, time.perf_counter() - start)
  return best


def _operands(product: Product) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  lhs = rng.standard_normal(product.lhs, dtype=np.float32)
  rhs = rng.standard_normal(product.rhs, dtype=np.float32)
  return lhs, rhs


# One compilation per (shapes, dimension numbers, dtype), however often a product is timed.
_dot_general = jax.jit(lax.dot_general, static_argnames=('dimension_numbers',))


def time_xla(product: Product, operands: tuple[np.ndarray, np.ndarray], repeats: int = 10):
  """Fastest seconds of one jitted dot_general of `product` on the default device."""
  lhs, rhs = (jnp.asarray(x, product.dtype) for x in operands)
  dims = product.dimension_numbers
  return _fastest_seconds(
    lambda: jax.block_until_ready(_dot_general(lhs, rhs, dimension_numbers=dims)), repeats
  )


def time_torch(product: Product, operands: tuple[np.ndarray, np.ndarray], repeats: int = 10):
  """Fastest seconds of torch.einsum of `product` on the CPU."""
  import torch  # Only this side needs PyTorch (requirements-parity.txt).

  dtype = getattr(torch, product.dtype)
  lhs, rhs = (torch.from_numpy(x).to(dtype) for x in operands)
  spec = product.einsum()
  return _fastest_seconds(lambda: torch.einsum(spec, lhs, rhs), repeats)


def floor(
  products: collections.Counter, repeats: int = 10, passes: int = 3, torch_side: bool = True
) -> dict:
  """Each product timed alone on both sides: rows (heaviest first) and their sums,
  weighted by how often the step runs each. A product's time on a side is its fastest
  call over `passes` sweeps through all the products (`repeats` calls per side per
  sweep, the sides one after the other on the same operands), so that both sides sample
  the same spells of a shared machine and a slow spell does not land on all of one
  product's calls."""
  ordered = list(products)
  sides = {'xla_ms': time_xla, 'torch_ms': time_torch} if torch_side else {'xla_ms': time_xla}
  best = {side: [float('inf')] * len(ordered) for side in sides}
  for _ in range(passes):
    for i, product in enumerate(ordered):
      operands = _operands(product)
      for side, timer in sides.items():
        best[side][i] = min(best[side][i], timer(product, operands, repeats) * 1e3)
  rows = []
  for i, product in enumerate(ordered):
    row = {
      'einsum': product.einsum(),
      'lhs': list(product.lhs),
      'rhs': list(product.rhs),
      'dtype': product.dtype,
      'count': products[product],
      'gflop': product.flops / 1e9,
    }
    rows.append(row | {side: times[i] for side, times in best.items()})
  rows.sort(key=lambda r: -r['count'] * r['xla_ms'])
  totals = {'products': sum(products.values())}
  totals['gflop'] = sum(r['count'] * r['gflop'] for r in rows)
  for side in sides:
    totals[side] = sum(r['count'] * r[side] for r in rows)
  return {'rows': rows, 'totals': totals}


def table(result: dict) -> str:
  """The rows as markdown, GFLOP/s per side."""
  has_torch = 'torch_ms' in result['totals']
  header = '| product (einsum) | lhs | rhs | x | xla ms (GFLOP/s) |'
  header += ' torch ms (GFLOP/s) |' if has_torch else ''
  lines = [header, '|---' * header.count(' |') + '|']
  for r in result['rows']:
    line = (f'| {r["einsum"]} | {r["lhs"]} | {r["rhs"]} | {r["count"]} '
            f'| {r["xla_ms"]:.2f} ({r["gflop"] / r["xla_ms"] * 1e3:.0f}) |')  # fmt: skip
    if has_torch:
      line += f' {r["torch_ms"]:.2f} ({r["gflop"] / r["torch_ms"] * 1e3:.0f}) |'
    lines.append(line)
  t = result['totals']
  total = f'| all {t["products"]} products, {t["gflop"]:.1f} GFLOP | | | | {t["xla_ms"]:.0f} |'
  lines.append(total + (f' {t["torch_ms"]:.0f} |' if has_torch else ''))
  return '\n'.join(lines)
