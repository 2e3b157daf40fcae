"""What the train-step benchmarks share: synthetic packed rows, a jitted train step built on
them, interleaved timing of several steps and the spread of its rounds.

bench/throughput.py (a config's step, and ours against Hugging Face's) and
bench/gpu_mfu.py (the GPU sweep) build on it. It imports JAX, NumPy and the project's
models and training modules only: no TensorFlow, Grain or ml_collections, so the GPU
sweep runs on a bare accelerator machine.

Timing is interleaved: after the warm-up (compilation excluded), each round runs
`steps` steps of every runner in turn, the order rotated by one each round, so a slow
spell of a shared machine lands on all of them; a runner's figure is the median of its
rounds, its spread their min and max, and a ratio of two runners is the median of the
per-round ratios.
"""

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from training import partitioning
from training import state as state_lib

# Shortest synthetic segment (framing included), as in data/packing.py.
_MIN_SEGMENT = 8
_MAX_SEGMENTS = 4


class SyntheticTokenizer:
  """The special ids of a tokenizer trained by data/tokenizers.py, and a vocabulary size."""

  pad_id, unk_id, bos_id, eos_id, cls_id, sep_id, mask_id = range(7)

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size
    self.special_ids = np.arange(7, dtype=np.int32)

  def id_to_piece(self, token_id: int) -> str:
    """A word-like piece per id (ELMo builds its character table from these)."""
    return f'<special{token_id}>' if token_id < 7 else f'▁w{token_id}'

  def unigram_frequencies(self) -> np.ndarray:
    """Zipf frequencies over the ordinary ids (word2vec's noise distribution)."""
    frequencies = np.zeros(self.vocab_size)
    frequencies[7:] = 1.0 / np.arange(1, self.vocab_size - 6)
    return frequencies / frequencies.sum()


def synthetic_rows(
  rng: np.random.Generator,
  batch_size: int,
  seq_len: int,
  *,
  vocab_size: int,
  prefix_id: int,
  suffix_id: int,
  first_ordinary_id: int,
  example_offset: int = 0,
) -> dict:
  """Packed rows as data/packing.py emits them, with random ordinary tokens.

  Each row holds 1 to 4 segments (fewer when seq_len is short), each framed by
  `prefix_id` ... `suffix_id`, followed by 0-7 padding positions.

  Returns:
    {'tokens', 'segment_ids', 'positions': int32 [batch, seq_len],
     'epoch', 'example_id': int64 [batch]}.
  """
  max_segments = max(1, min(_MAX_SEGMENTS, seq_len // (2 * _MIN_SEGMENT)))
  pad = rng.integers(0, min(_MIN_SEGMENT - 1, seq_len // 16) + 1, size=batch_size)  # [batch]
  fill = seq_len - pad
  count = rng.integers(1, max_segments + 1, size=batch_size)  # Segments per row.
  active = np.arange(max_segments)[None, :] < count[:, None]  # [batch, max_segments]
  share = (rng.random((batch_size, max_segments)) + 0.05) * active
  spare = fill - count * _MIN_SEGMENT
  lengths = active * _MIN_SEGMENT + np.floor(
    share / share.sum(1, keepdims=True) * spare[:, None]
  ).astype(np.int64)
  lengths[np.arange(batch_size), count - 1] += fill - lengths.sum(1)  # Rounding to the last.
  ends = np.cumsum(lengths, axis=1)  # [batch, max_segments]
  starts = ends - lengths
  pos = np.arange(seq_len)[None, None, :]
  inside = (pos >= starts[..., None]) & (pos < ends[..., None])  # [batch, max_segments, length]
  inside &= active[..., None]
  segment_ids = (inside * np.arange(1, max_segments + 1)[None, :, None]).sum(1)
  positions = (inside * (pos - starts[..., None])).sum(1)  # [batch, length]
  last = (inside & (pos == ends[..., None] - 1)).any(1)
  tokens = rng.integers(first_ordinary_id, vocab_size, size=(batch_size, seq_len))
  tokens = np.where(last, suffix_id, tokens)
  tokens = np.where((positions == 0) & (segment_ids > 0), prefix_id, tokens)
  tokens = np.where(segment_ids > 0, tokens, 0)
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': positions.astype(np.int32),
    'epoch': np.zeros(batch_size, np.int64),
    'example_id': example_offset + np.arange(batch_size, dtype=np.int64),
  }


def peak_memory() -> tuple[int, str]:
  """(bytes, source): the devices' peak_bytes_in_use, else the process's max RSS."""
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:  # Some backends raise instead of returning None.
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(stats['peak_bytes_in_use'])
  if peaks:
    return max(peaks), 'device peak_bytes_in_use (max over local devices)'
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux.
  return kib * 1024, 'process max RSS (device memory_stats unavailable)'


@dataclasses.dataclass
class Runner:
  """A compiled step `fn(state, batch) -> (state, metrics)` with its state and batches:
  each call runs one step (cycling over the batches) and waits for it to finish."""

  fn: Callable
  state: object
  batches: list
  compile_s: float = 0.0
  metrics: dict | None = None
  count: int = 0
  step: Callable | None = None  # The jitted step `fn` was compiled from (for its jaxpr).

  def __call__(self):
    batch = self.batches[self.count % len(self.batches)]
    self.state, self.metrics = self.fn(self.state, batch)
    jax.block_until_ready((self.state, self.metrics))
    self.count += 1

  def flops(self) -> float | None:
    """The compiled step's FLOPs by XLA's cost analysis (None where the backend has none)."""
    try:
      cost = self.fn.cost_analysis()
    except Exception:  # Not every backend or jax version reports a cost.
      return None
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost['flops']) if cost and 'flops' in cost else None


class MatmulPeak:
  """A runner that multiplies two [size, size] matrices of `dtype`, a few times per call:
  timed interleaved with train steps, its fastest product gives the machine's matmul
  FLOP/s under the same load (the MFU denominator on a CPU, which publishes no peak;
  the fastest, since a shared machine's load only ever slows a product down)."""

  def __init__(self, dtype: str = 'float32', size: int = 2048, per_call: int = 3):
    self.flops, self.per_call, self.best = 2 * size**3, per_call, float('inf')
    self.matrix = jnp.ones((size, size), dtype)
    self.matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(self.matmul(self.matrix))  # Compiled here, not in a round.

  def __call__(self):
    for _ in range(self.per_call):
      start = time.perf_counter()
      jax.block_until_ready(self.matmul(self.matrix))
      self.best = min(self.best, time.perf_counter() - start)

  def peak(self) -> float:
    """FLOP/s of the fastest product so far."""
    return self.flops / self.best


def compile_timed(step, *args):
  """(compiled, seconds): lowers and compiles the jitted `step` for `args`."""
  start = time.perf_counter()
  compiled = step.lower(*args).compile()
  return compiled, time.perf_counter() - start


def train_step_runner(
  model,
  tx,
  loss_fn,
  host_batches: list[dict],
  *,
  mesh,
  rules,
  seed: int,
  seq_len: int,
  prepare: Callable | None = None,
  **step_options,
) -> Runner:
  """The project's train step (training/state.py: state born sharded, the step jitted
  with explicit shardings and the state donated) on `host_batches`, compiled.

  `host_batches` hold every process's local rows; they are placed on the mesh before
  timing, so the timed loop is the device step alone, not the input pipeline.
  `prepare(state, shardings) -> state` runs on the fresh state first (a checkpoint's
  weights put in place); `step_options` go to the step (training/harness.step_options:
  accumulation, loss terms, the spike guard, the PRNG).
  """
  state, shardings = state_lib.create(model, tx, mesh=mesh, rules=rules, seed=seed, seq_len=seq_len)
  if prepare is not None:
    state = prepare(state, shardings)
  batch_sharding = partitioning.batch_sharding(mesh)
  batches = [partitioning.global_batch(b, batch_sharding) for b in host_batches]
  step = state_lib.jit_train_step(
    shardings,
    batch_sharding,
    mesh=mesh,
    rules=rules,
    model=model,
    loss_fn=loss_fn,
    tx=tx,
    seed=seed,
    **step_options,
  )
  compiled, compile_s = compile_timed(step, state, batches[0])
  return Runner(compiled, state, batches, compile_s, step=step)


def param_count(state) -> int:
  """Parameters of a TrainState (or of a (params, opt_state) pair)."""
  params = state.params if hasattr(state, 'params') else state[0]
  return int(sum(x.size for x in jax.tree.leaves(params)))


def interleaved(
  runners: dict[str, Callable[[], None]], *, warmup: int, repeats: int, steps: int
) -> dict[str, list[float]]:
  """Seconds per step of each runner in each of `repeats` rounds (see the module doc).

  Args:
    runners: {name: a callable that runs one step and waits for it}.
    warmup: untimed steps of each runner first (after compilation).
    repeats: rounds.
    steps: timed steps of a runner per round (their mean is the round's figure).
  """
  if repeats < 1 or steps < 1 or warmup < 0:
    raise ValueError(f'repeats={repeats} and steps={steps} must be >= 1 and warmup={warmup} >= 0.')
  for run in runners.values():
    for _ in range(warmup):
      run()
  names = list(runners)
  times = {name: [] for name in names}
  for round_index in range(repeats):
    shift = round_index % len(names)
    for name in names[shift:] + names[:shift]:
      start = time.perf_counter()
      for _ in range(steps):
        runners[name]()
      times[name].append((time.perf_counter() - start) / steps)
  return times


def spread(values: list[float]) -> dict[str, float]:
  """{'median', 'min', 'max'} of a runner's rounds (or of per-round ratios)."""
  return {'median': statistics.median(values), 'min': min(values), 'max': max(values)}


def round_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
  """numerator[i] / denominator[i] for each round: two runners timed in the same round."""
  return [a / b for a, b in zip(numerator, denominator, strict=True)]


def text_table(header: list[str], rows: list[list[str]]) -> str:
  """Right-aligned columns separated by ' | ', a rule under the header."""
  widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
  lines = [' | '.join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
  lines.append('-+-'.join('-' * w for w in widths))
  lines += [' | '.join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
  return '\n'.join(lines)
