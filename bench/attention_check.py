"""A fused attention kernel against the XLA reference on packed rows: outputs, gradients
and the time of a forward + backward pass, side by side.

  python -m bench.attention_check                  # cuDNN vs XLA on an NVIDIA GPU (H100)
  python -m bench.attention_check --impl splash    # the splash kernel vs XLA on a TPU
  python -m bench.attention_check --smoke          # tiny shapes on CPU (the script itself)

Rows are packed documents of random lengths with some end padding, the same rows for
both implementations; attention dropout is 0, so the two must agree to rounding. Each
case (bidirectional, causal, and with an additive bias where the kernel takes one)
reports max |kernel - reference| of the output and of dq, dk, dv (the gradients of a
random projection of the output), the tolerance, and the milliseconds of one jitted
forward + backward of each, with their ratio. `--smoke` runs on CPU with tiny shapes,
the kernel being splash in Pallas' interpreter (or `--impl xla`, the dispatcher
against the reference).

Prints a table, then the records as JSON; `--json FILE` also writes them to FILE; the
exit status is 1 when a difference exceeds its tolerance. Imports JAX, NumPy and
models/attention.py only: no TensorFlow, Grain or ml_collections.
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from models import attention

# |kernel - reference| allowed, relative to the largest |reference| value of the array
# (at least 1): float32 to rounding, bfloat16/float16 to a few ulps of an 8/11-bit mantissa.
TOLERANCE = {'float32': 1e-5, 'bfloat16': 2e-2, 'float16': 4e-3}


def packed_segments(batch: int, length: int, seed: int) -> np.ndarray:
  """[batch, length] segment ids: documents of 1/8 to 1/2 of the row, then padding."""
  rng = np.random.default_rng(seed)
  segments = np.zeros((batch, length), np.int32)
  for row in range(batch):
    start, doc = 0, 1
    end = length - rng.integers(0, length // 8 + 1)  # Some rows end in padding.
    while start < end:
      n = min(int(rng.integers(length // 8, length // 2 + 1)), end - start)
      segments[row, start : start + n] = doc
      start, doc = start + n, doc + 1
  return segments


def _attention_fn(impl: str, mask, bias, scale: float, smoke: bool):
  if impl == 'reference':
    return lambda q, k, v: attention.xla_attention(q, k, v, mask, bias=bias, scale=scale)
  if impl == 'splash' and smoke:  # The TPU kernel, interpreted on CPU.
    return lambda q, k, v: attention.splash_attention(q, k, v, mask, scale=scale, interpret=True)
  return lambda q, k, v: attention.dot_product_attention(
    q, k, v, mask, bias=bias, scale=scale, implementation=impl
  )


def _forward_backward(fn, weights):
  """Jitted (output, (dq, dk, dv)) of sum(fn(q, k, v) * weights)."""

  def loss(q, k, v):
    out = fn(q, k, v)
    return jnp.sum(out.astype(jnp.float32) * weights), out

  grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
  return jax.jit(lambda q, k, v: grad(q, k, v)[::-1])


def _time_ms(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def check_case(impl: str, case: str, args, smoke: bool) -> dict:
  """One case's record: differences, tolerance, times."""
  dtype = jnp.dtype(args.dtype)
  rng = np.random.default_rng(args.seed)
  shape = (args.batch, args.length, args.heads, args.head_dim)
  q, k, v = (jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))
  weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
  segments = jnp.asarray(packed_segments(args.batch, args.length, args.seed))
  mask = attention.SegmentMask.self_attend(segments, causal=case == 'causal')
  bias = None
  if case == 'bias':  # A T5-like relative-position bias, per head.
    bias_shape = (args.batch, args.heads, args.length, args.length)
    bias = jnp.asarray(rng.normal(size=bias_shape), dtype)
  scale = args.head_dim**-0.5
  kernel = _forward_backward(_attention_fn(impl, mask, bias, scale, smoke), weights)
  reference = _forward_backward(_attention_fn('reference', mask, bias, scale, smoke), weights)
  (out, grads), (ref_out, ref_grads) = kernel(q, k, v), reference(q, k, v)
  tolerance = TOLERANCE[args.dtype]
  record = dict(
    impl=impl, case=case, dtype=args.dtype, batch=args.batch, length=args.length,
    heads=args.heads, head_dim=args.head_dim, tolerance=tolerance,
  )  # fmt: skip
  passed = True
  arrays = zip(('out', 'dq', 'dk', 'dv'), (out, *grads), (ref_out, *ref_grads), strict=True)
  for name, got, want in arrays:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    diff = float(np.abs(got - want).max())
    record[f'max_abs_diff_{name}'] = diff
    passed &= diff <= tolerance * max(float(np.abs(want).max()), 1.0)
  record['passed'] = bool(passed)
  record['kernel_ms'] = _time_ms(kernel, (q, k, v), args.repeats)
  record['reference_ms'] = _time_ms(reference, (q, k, v), args.repeats)
  record['speedup'] = record['reference_ms'] / record['kernel_ms']
  return record


def format_table(records: list[dict]) -> str:
  columns = ['impl', 'case', 'dtype', 'length', 'max_abs_diff_out', 'max_abs_diff_dq',
             'max_abs_diff_dk', 'max_abs_diff_dv', 'passed', 'kernel_ms', 'reference_ms',
             'speedup']  # fmt: skip
  cell = lambda v: f'{v:.3g}' if isinstance(v, float) else str(v)  # noqa: E731
  rows = [columns] + [[cell(r[c]) for c in columns] for r in records]
  widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
    prog='python -m bench.attention_check',
    description='A fused attention kernel against the XLA reference on packed rows.',
    allow_abbrev=False,
  )
  parser.add_argument('--impl', default=None, help="'cudnn' (default), 'splash' or 'xla'.")
  parser.add_argument('--smoke', action='store_true', help='Tiny shapes on CPU.')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--length', type=int, default=1024)
  parser.add_argument('--heads', type=int, default=12)
  parser.add_argument('--head_dim', type=int, default=64)
  parser.add_argument('--dtype', default='bfloat16', choices=sorted(TOLERANCE))
  parser.add_argument('--repeats', type=int, default=10, help='Timed runs per function.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default=None, help='Also write the records to this file.')
  args = parser.parse_args(argv)
  if args.smoke:
    args.batch, args.length, args.heads, args.head_dim = 2, 128, 2, 16
    args.dtype, args.repeats = 'float32', 2
    impl = args.impl or ('splash' if attention._splash is not None else 'xla')
  else:
    impl = args.impl or 'cudnn'
  cases = ['bidirectional', 'causal'] + (['bias'] if impl in ('cudnn', 'xla') else [])
  try:
    records = [check_case(impl, case, args, args.smoke) for case in cases]
  except ValueError as error:  # A kernel this machine cannot run: say so, no traceback.
    parser.error(str(error))
  device = jax.devices()[0]
  for record in records:
    record.update(platform=device.platform, device_kind=device.device_kind)
  print(format_table(records))
  print(json.dumps(records, indent=2))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(records, f, indent=2)
  return records


if __name__ == '__main__':
  sys.exit(0 if all(r['passed'] for r in main(sys.argv[1:])) else 1)
