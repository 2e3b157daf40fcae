"""Training throughput of a config on synthetic batches: step time, tokens/s, MFU, memory.

  python -m bench.throughput --config configs/quickstart.py \\
      --config.model.preset=bert-base --config.seq_len=128 --config.batch_size=8 \\
      --warmup 2 --steps 10 [--json bert_base.json]

Builds exactly what train.py builds from the config (preset, objective, mesh and
logical rules, optimizer, sharded state, jitted train step) but feeds it
synthetic packed rows: random ordinary ids in 1-4 framed segments per row with a
little end padding, turned into model inputs by the objective's own host-side
`make_preprocess` (so MLM predicts ~15% of the tokens). The vocabulary is the
preset's own, as there is no tokenizer. A few distinct batches are placed on
the devices before timing and cycled, so the timed loop is the device step
alone, not the input pipeline.

Prints a table, then the same record as JSON on stdout; `--json FILE` also
writes it to FILE. Tokens/s counts every position of the batch (padding
included), as the training log does; MFU follows models/flops.py (6 x matmul
params + attention, causal not halved).

Imports no TensorFlow, TFDS or Grain, so it runs on a bare accelerator machine with
JAX, Flax, optax and Orbax; the config is read by ml_collections (configs/loading.py),
a small pure-Python wheel to carry there if the machine lacks it.
"""

import argparse
import json
import resource
import statistics
import sys
import time

import jax
import numpy as np

from configs import loading
from models import flops, presets
from objectives import api
from training import mfu, model_setup, optimizers, partitioning
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


def synthetic_batches(config, objective, vocab_size: int, num: int, rows: int) -> list[dict]:
  """`num` host batches of `rows` rows, passed through the objective's preprocess."""
  tokenizer = SyntheticTokenizer(vocab_size)
  preprocess = objective.make_preprocess(config.objective, tokenizer, config.seed)
  prefix_id, suffix_id = (getattr(tokenizer, name) for name in objective.FRAMING)
  rng = np.random.default_rng(config.seed)
  batches = []
  for i in range(num):
    rows_i = synthetic_rows(
      rng,
      rows,
      api.packed_length(objective, config.objective, config.seq_len),
      vocab_size=vocab_size,
      prefix_id=prefix_id,
      suffix_id=suffix_id,
      first_ordinary_id=len(tokenizer.special_ids),
      example_offset=(jax.process_index() * num + i) * rows,
    )
    batches.append(preprocess(rows_i))
  return batches


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


def _compile(step, state, batch):
  """Lowers and compiles the jitted step (inside its mesh and rules), timed."""
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  return compiled, time.perf_counter() - start


def run(config, *, steps: int, warmup: int, num_batches: int = 4) -> dict:
  """Builds the config's training step, times it on synthetic batches, returns the record."""
  if steps < 1 or warmup < 0:
    raise ValueError(f'--steps={steps} must be >= 1 and --warmup={warmup} >= 0.')
  objective = api.load(config.objective.module, config.objective)
  vocab_size = presets.get_config(config.model.preset).vocab_size
  model_cfg = model_setup.model_config(config, vocab_size)
  model = objective.build_model(model_cfg)
  mesh = partitioning.make_mesh(config.mesh)
  rules = partitioning.logical_rules(config.mesh.strategy)
  partitioning.check_batch(config.batch_size, mesh)
  if config.batch_size % jax.process_count():
    raise ValueError(
      f'batch_size={config.batch_size} cannot be split over {jax.process_count()} processes.'
    )
  tx = optimizers.build(config.optimizer, config.total_steps)
  state, shardings = state_lib.create(
    model, tx, mesh=mesh, rules=rules, seed=config.seed, seq_len=config.seq_len
  )
  params = sum(x.size for x in jax.tree.leaves(state.params))
  batch_sharding = partitioning.batch_sharding(mesh)
  local_rows = config.batch_size // jax.process_count()
  batches = [
    partitioning.global_batch(b, batch_sharding)
    for b in synthetic_batches(config, objective, vocab_size, num_batches, local_rows)
  ]
  predicted = float(np.mean([np.asarray(b['weights']).mean() for b in batches]))
  train_step = state_lib.jit_train_step(
    shardings,
    batch_sharding,
    mesh=mesh,
    rules=rules,
    model=model,
    loss_fn=objective.loss_fn,
    tx=tx,
    seed=config.seed,
  )
  step_fn, compile_s = _compile(train_step, state, batches[0])

  for i in range(warmup):
    state, metrics = step_fn(state, batches[i % num_batches])
  jax.block_until_ready(state)
  times = []
  for i in range(steps):
    start = time.perf_counter()
    state, metrics = step_fn(state, batches[(warmup + i) % num_batches])
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  loss_sum, loss_weight = metrics['loss']
  loss = float(loss_sum) / max(float(loss_weight), 1.0)

  mean = sum(times) / len(times)
  tokens_per_s = config.batch_size * config.seq_len / mean
  flops_per_token = flops.model_flops_per_token(model, model_cfg, config.seq_len)
  peak, peak_source = config.peak_flops_per_device, 'configured peak_flops_per_device'
  if not peak:
    peak, peak_source = mfu.measured_peak_flops(), 'measured float32 matmul peak'
  memory, memory_source = peak_memory()
  device = jax.devices()[0]
  return {
    'preset': config.model.preset,
    'objective': config.objective.module,
    'params': int(params),
    'devices': jax.device_count(),
    'processes': jax.process_count(),
    'platform': device.platform,
    'device_kind': device.device_kind,
    'mesh': dict(mesh.shape),
    'strategy': config.mesh.strategy,
    'batch_size': config.batch_size,
    'seq_len': config.seq_len,
    'dtype': model_cfg.dtype,
    'param_dtype': model_cfg.param_dtype,
    'predicted_fraction': predicted,
    'compile_s': compile_s,
    'warmup_steps': warmup,
    'steps': steps,
    'step_time_ms': mean * 1e3,
    'step_time_ms_median': statistics.median(times) * 1e3,
    'step_time_ms_min': min(times) * 1e3,
    'tokens_per_s': tokens_per_s,
    'flops_per_token': flops_per_token,
    'peak_flops_per_device': peak,
    'peak_flops_source': peak_source,
    'mfu': flops_per_token * tokens_per_s / (peak * jax.device_count()),
    'peak_memory_bytes': int(memory),
    'peak_memory_source': memory_source,
    'final_loss': loss,
    'jax_version': jax.__version__,
  }


def _bytes(n: int) -> str:
  for unit, size in (('GiB', 1 << 30), ('MiB', 1 << 20)):
    if n >= size:
      return f'{n / size:.2f} {unit}'
  return f'{n / 1024:.0f} KiB'


def format_table(records: list[dict]) -> str:
  """A text table with one row per record, then the sources of MFU and memory."""
  columns = (
    ('preset', lambda r: r['preset']),
    ('params', lambda r: f'{r["params"] / 1e6:.1f}M'),
    ('devices', lambda r: f'{r["devices"]} {r["platform"]}'),
    ('batch', lambda r: str(r['batch_size'])),
    ('seq_len', lambda r: str(r['seq_len'])),
    ('dtype', lambda r: r['dtype']),
    ('compile s', lambda r: f'{r["compile_s"]:.1f}'),
    ('step ms', lambda r: f'{r["step_time_ms"]:.1f}'),
    ('tokens/s', lambda r: f'{r["tokens_per_s"]:,.0f}'),
    ('MFU', lambda r: f'{100 * r["mfu"]:.1f}%'),
    ('peak mem', lambda r: _bytes(r['peak_memory_bytes'])),
  )
  cells = [[fn(r) for _, fn in columns] for r in records]
  widths = [max(len(name), *(len(row[i]) for row in cells)) for i, (name, _) in enumerate(columns)]
  lines = [' | '.join(name.rjust(w) for (name, _), w in zip(columns, widths, strict=True))]
  lines.append('-+-'.join('-' * w for w in widths))
  lines += [' | '.join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
  for r in records:
    lines.append(
      f'{r["preset"]}: {r["objective"]}, mesh {r["mesh"]} ({r["strategy"]}), {r["device_kind"]};'
      f' step time mean of {r["steps"]} after {r["warmup_steps"]} warm-up'
      f' (median {r["step_time_ms_median"]:.1f} ms, min {r["step_time_ms_min"]:.1f} ms);'
      f' MFU against {r["peak_flops_per_device"] / 1e9:,.1f} GFLOP/s per device'
      f' ({r["peak_flops_source"]}), {r["flops_per_token"] / 1e6:.1f} MFLOPs/token'
      f' (6 x matmul params + attention, causal not halved); peak memory: {r["peak_memory_source"]}.'
    )
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(
    prog='python -m bench.throughput',
    description='Training-step throughput of a config on synthetic batches.',
    epilog='Any config key can be overridden with --config.key=value.',
    allow_abbrev=False,
  )
  parser.add_argument('--config', required=True, help='Experiment config file.')
  parser.add_argument('--steps', type=int, default=10, help='Timed steps.')
  parser.add_argument('--warmup', type=int, default=2, help='Untimed steps after compiling.')
  parser.add_argument('--json', default=None, help='Also write the record to this file.')
  args, rest = parser.parse_known_args(argv)
  try:
    config = loading.load(args.config, rest)
  except (ValueError, FileNotFoundError) as e:
    parser.error(str(e))
  record = run(config, steps=args.steps, warmup=args.warmup)
  print(format_table([record]))
  print(json.dumps(record, indent=2))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(record, f, indent=2)
  return record


if __name__ == '__main__':
  main(sys.argv[1:])
