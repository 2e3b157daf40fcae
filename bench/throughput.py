"""Training throughput on synthetic batches: a config's step (time, tokens/s, MFU, memory),
or ours against Hugging Face's Flax models side by side in one process.

  python -m bench.throughput --config configs/quickstart.py \\
      --config.model.preset=bert-base --config.seq_len=128 --config.batch_size=8 \\
      --warmup 2 --steps 10 [--json bert_base.json]

  python -m bench.throughput --compare hf [--models bert-base,gpt2-small] \\
      [--config.model.dtype=bfloat16] [--repeats 5 --steps 2 --warmup 1] [--json hf.json]

A config's step: exactly what train.py builds from the config (preset, objective, mesh
and logical rules, optimizer, sharded state, jitted train step), fed synthetic packed
rows (bench/step_timing.py: random ordinary ids in 1-4 framed segments per row with a
little end padding) turned into model inputs by the objective's own host-side
`make_preprocess` (so MLM predicts ~15% of the tokens). The vocabulary is the preset's
own, as there is no tokenizer. A few distinct batches are placed on the devices before
timing and cycled, so the timed loop is the device step alone, not the input pipeline.

`--compare hf` times, in one process, ours and transformers' Flax models of the same
sizes (bench/hf_reference.py: bert-base is `BertConfig()`, gpt2-small `GPT2Config()`)
on the same batches, shapes (default 8 x 128), dtype (float32 default; set
`--config.model.dtype=bfloat16`) and optimizer (the config's: AdamW with clipping), all
dropout off, both randomly initialized from the seed. Ours is the real train step with
the objective's loss: for a BERT-like model MLM with its gathered masked positions
(`objective.max_predictions_per_seq`, sized automatically: only those reach the
vocabulary projection, as BERT's TF code does), and again with
`max_predictions_per_seq=-1` (every position, as HF's `FlaxBertForMaskedLM` computes);
for a GPT-2-like model CLM. The runners of a model are timed interleaved (bench/
step_timing.py: rounds of `--steps` steps of each, order rotated; compile and warm-up
excluded); each figure is the median over `--repeats` rounds with its min and max, and
"x HF" is ours tokens/s / HF's, the median of the per-round ratios.

Prints a table, then the record(s) as JSON on stdout; `--json FILE` also writes them.
Tokens/s counts every position of the batch (padding included), as the training log
does; MFU follows models/flops.py (6 x matmul params + attention, causal not halved;
ours gathered counts its vocabulary projection on the gathered positions only, HF's on
every one) against `peak_flops_per_device`, else a measured matmul peak: float32 for a
config's step; for `--compare`, the fastest 2048^3 matmul of the compute dtype timed as
one more runner of the interleaved rounds, so that the peak is measured under the same
load as the steps (a shared machine's load drifts).

Imports no TensorFlow, TFDS or Grain, so it runs on a bare accelerator machine with JAX,
Flax, optax and Orbax; the config is read by ml_collections (configs/loading.py), a small
pure-Python wheel to carry there if the machine lacks it (bench/gpu.sh needs none: its
sweep, bench/gpu_mfu.py, takes no config). `--compare hf` also needs transformers
(requirements-parity.txt), imported only in that mode.
"""

import argparse
import dataclasses
import json
import os
import sys

import flax
import jax
import numpy as np
import optax

from bench import hf_reference, step_timing
from bench.step_timing import SyntheticTokenizer, synthetic_rows  # Also bench/objectives.py's.
from configs import loading
from models import flops, presets
from objectives import api
from training import mfu, model_setup, optimizers, partitioning

# The objective ours trains, by the family of the model compared with Hugging Face.
COMPARE_OBJECTIVES = {'bert': 'objectives.mlm', 'gpt2': 'objectives.clm'}
COMPARE_MODELS = ('bert-base', 'gpt2-small')
# What --compare sets before the command line's own --config overrides.
COMPARE_DEFAULTS = ('--config.batch_size=8', '--config.seq_len=128')


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


@dataclasses.dataclass
class Built:
  """A config's train step, compiled on its synthetic batches, and what describes it."""

  config: object
  objective: object
  model: object
  model_cfg: object
  mesh: object
  host_batches: list[dict]
  runner: step_timing.Runner
  predicted_len: int  # Positions per row projected onto the vocabulary.
  flops_per_token: float


def build(config, *, num_batches: int = 4) -> Built:
  """Builds the config's training step on synthetic batches, compiled (not yet run)."""
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
  local_rows = config.batch_size // jax.process_count()
  host_batches = synthetic_batches(config, objective, vocab_size, num_batches, local_rows)
  runner = step_timing.train_step_runner(
    model,
    tx,
    objective.loss_fn,
    host_batches,
    mesh=mesh,
    rules=rules,
    seed=config.seed,
    seq_len=config.seq_len,
  )
  predicted = api.predicted_length(objective, config.objective, config.seq_len)
  per_token = api.flops_per_token(objective, config.objective, model, model_cfg, config.seq_len)
  return Built(
    config, objective, model, model_cfg, mesh, host_batches, runner, predicted, per_token
  )


def peak_flops(config) -> tuple[float, str]:
  """(FLOP/s per device, source): `peak_flops_per_device`, else a measured matmul peak."""
  if config.peak_flops_per_device:
    return config.peak_flops_per_device, 'configured peak_flops_per_device'
  return mfu.measured_peak_flops(), 'measured float32 matmul peak'


def _final_loss(metrics: dict) -> float:
  loss_sum, loss_weight = metrics['loss']
  return float(loss_sum) / max(float(loss_weight), 1.0)


def run(config, *, steps: int, warmup: int, num_batches: int = 4) -> dict:
  """Builds the config's training step, times it on synthetic batches, returns the record."""
  if steps < 1 or warmup < 0:
    raise ValueError(f'--steps={steps} must be >= 1 and --warmup={warmup} >= 0.')
  built = build(config, num_batches=num_batches)
  runner, model_cfg = built.runner, built.model_cfg
  predicted = float(np.mean([np.asarray(b['weights']).mean() for b in built.host_batches]))
  for _ in range(warmup):
    runner()
  times = step_timing.interleaved({'step': runner}, warmup=0, repeats=steps, steps=1)['step']
  mean = sum(times) / len(times)
  tokens_per_s = config.batch_size * config.seq_len / mean
  peak, peak_source = peak_flops(config)
  memory, memory_source = step_timing.peak_memory()
  device = jax.devices()[0]
  return {
    'preset': config.model.preset,
    'objective': config.objective.module,
    'params': step_timing.param_count(runner.state),
    'devices': jax.device_count(),
    'processes': jax.process_count(),
    'platform': device.platform,
    'device_kind': device.device_kind,
    'mesh': dict(built.mesh.shape),
    'strategy': config.mesh.strategy,
    'batch_size': config.batch_size,
    'seq_len': config.seq_len,
    'dtype': model_cfg.dtype,
    'param_dtype': model_cfg.param_dtype,
    'predicted_fraction': predicted,
    'compile_s': runner.compile_s,
    'warmup_steps': warmup,
    'steps': steps,
    'step_time_ms': mean * 1e3,
    'step_time_ms_median': step_timing.spread(times)['median'] * 1e3,
    'step_time_ms_min': min(times) * 1e3,
    'tokens_per_s': tokens_per_s,
    'flops_per_token': built.flops_per_token,
    'peak_flops_per_device': peak,
    'peak_flops_source': peak_source,
    'mfu': built.flops_per_token * tokens_per_s / (peak * jax.device_count()),
    'peak_memory_bytes': int(memory),
    'peak_memory_source': memory_source,
    'final_loss': _final_loss(runner.metrics),
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
  rows = [[fn(r) for _, fn in columns] for r in records]
  lines = [step_timing.text_table([name for name, _ in columns], rows)]
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


# --- Ours against Hugging Face ------------------------------------------------------------


def compare_config(spec: str, preset: str, overrides: list[str], all_positions: bool = False):
  """The config of one of our runners in `--compare hf`: `spec` with the compared preset,
  its family's objective, dropout off and the command line's overrides (with
  `all_positions`, MLM's `max_predictions_per_seq=-1`)."""
  objective = COMPARE_OBJECTIVES[hf_reference.family(presets.get_config(preset))]
  forced = [
    f'--config.model.preset={preset}',
    f'--config.objective.module={objective}',
    '--config.model.dropout_rate=0.0',  # Attention dropout too (training/model_setup.py).
  ]
  for override in overrides:
    key = override.split('=')[0]
    if any(key == f.split('=')[0] for f in forced):
      raise ValueError(f'{override}: --compare hf sets {key} itself.')
  if all_positions:
    forced.append('--config.objective.max_predictions_per_seq=-1')
  return loading.load(spec, [*COMPARE_DEFAULTS, *overrides, *forced])


def _hf_runner(built: Built) -> step_timing.Runner:
  """HF's step for `built`'s model sizes and dtype, on its batches, compiled."""
  config, model_cfg = built.config, built.model_cfg
  model = hf_reference.build_model(model_cfg, seed=config.seed)
  tx = optimizers.build(config.optimizer, config.total_steps)
  state, shardings = hf_reference.train_state(model, tx, built.mesh)
  step = hf_reference.jit_train_step(model_cfg, model, tx, shardings, built.mesh)
  batch_sharding = partitioning.batch_sharding(built.mesh)
  batches = [
    partitioning.global_batch(b, batch_sharding)
    for b in hf_reference.model_batches(built.host_batches)
  ]
  compiled, compile_s = step_timing.compile_timed(step, state, batches[0])
  return step_timing.Runner(compiled, state, batches, compile_s)


def _side_record(name: str, side: str, built: Built, runner, times, flops_per_token, peak):
  config = built.config
  tokens = config.batch_size * config.seq_len
  median = step_timing.spread(times)
  tokens_per_s = tokens / median['median']
  return {
    'model': config.model.preset,
    'runner': name,
    'side': side,
    'predicted_len': built.predicted_len if side == 'ours' else config.seq_len,
    'params': step_timing.param_count(runner.state),
    'compile_s': runner.compile_s,
    'step_ms': {k: v * 1e3 for k, v in median.items()},
    'step_ms_rounds': [t * 1e3 for t in times],
    'tokens_per_s': tokens_per_s,
    'flops_per_token': flops_per_token,
    'peak_flops_per_device': peak,
    'mfu': flops_per_token * tokens_per_s / (peak * jax.device_count()),
    'xla_flops_per_step': runner.flops(),
    'final_loss': _final_loss(runner.metrics),
  }


PEAK_RUNNER = 'matmul peak'


def compare_model(spec, preset, overrides, *, repeats, steps, warmup) -> list[dict]:
  """Ours (MLM gathered and at every position, or CLM) and HF's step of `preset`, timed
  interleaved (with a matmul of the compute dtype when no peak is configured: the MFU
  denominator under the same load); one record per runner, ours with its ratio to HF."""
  family = hf_reference.family(presets.get_config(preset))
  variants = {'ours': False}
  if family == 'bert':
    variants = {'ours (gathered)': False, 'ours (all positions)': True}
  built = {
    name: build(compare_config(spec, preset, overrides, all_positions))
    for name, all_positions in variants.items()
  }
  last = built[list(variants)[-1]]  # Every position's targets: what HF predicts.
  runners = {name: b.runner for name, b in built.items()}
  runners['hf'] = _hf_runner(last)
  peak = last.config.peak_flops_per_device
  if not peak:
    runners[PEAK_RUNNER] = step_timing.MatmulPeak(last.model_cfg.dtype)
  times = step_timing.interleaved(runners, warmup=warmup, repeats=repeats, steps=steps)
  if not peak:
    peak = runners[PEAK_RUNNER].peak()
  all_positions = flops.model_flops_per_token(
    last.model, last.model_cfg, last.config.seq_len, predicted_len=last.config.seq_len
  )
  records = [
    _side_record(name, 'ours', b, b.runner, times[name], b.flops_per_token, peak)
    for name, b in built.items()
  ]
  records.append(_side_record('hf', 'hf', last, runners['hf'], times['hf'], all_positions, peak))
  hf_flops = records[-1]['xla_flops_per_step']
  for record in records[:-1]:
    ratios = step_timing.round_ratios(times['hf'], times[record['runner']])
    record['x_hf'] = step_timing.spread(ratios)
    record['x_hf_rounds'] = ratios
    ours_flops = record['xla_flops_per_step']
    # The ratio the work alone allows: ours as fast per FLOP as HF's.
    record['x_hf_by_flops'] = hf_flops / ours_flops if hf_flops and ours_flops else None
  return records


def compare_hf(spec, overrides, *, models, repeats, steps, warmup) -> dict:
  """Every model of `models` against HF (see the module doc); the comparison's record."""
  from transformers import __version__ as transformers_version  # Heavy optional dependency.

  config = compare_config(spec, models[0], overrides)
  peak_source = 'configured peak_flops_per_device'
  if not config.peak_flops_per_device:
    peak_source = f'measured: the fastest {config.model.dtype} 2048^3 matmul of the rounds'
  records = []
  for preset in models:
    records += compare_model(spec, preset, overrides, repeats=repeats, steps=steps, warmup=warmup)
  device = jax.devices()[0]
  return {
    'batch_size': config.batch_size,
    'seq_len': config.seq_len,
    'dtype': config.model.dtype,
    'optimizer': config.optimizer.name,
    'repeats': repeats,
    'steps_per_round': steps,
    'warmup_steps': warmup,
    'devices': jax.device_count(),
    'platform': device.platform,
    'device_kind': device.device_kind,
    'cpu_count': os.cpu_count(),
    'peak_flops_source': peak_source,
    'versions': {
      'jax': jax.__version__,
      'flax': flax.__version__,
      'optax': optax.__version__,
      'transformers': transformers_version,
    },
    'runners': records,
  }


def format_comparison(result: dict) -> str:
  """The comparison's table, then how to read it."""
  header = [
    'model',
    'runner',
    'predicted/row',
    'params',
    'compile s',
    'step ms (median)',
    'min-max',
    'tokens/s',
    'MFU',
    'GFLOP/step (XLA)',
    'x HF (median)',
    'min-max',
    'HF/ours FLOPs',
  ]
  rows = []
  for r in result['runners']:
    step, ratio = r['step_ms'], r.get('x_hf')
    xla = r['xla_flops_per_step']
    rows.append(
      [
        r['model'],
        r['runner'],
        f'{r["predicted_len"]}/{result["seq_len"]}',
        f'{r["params"] / 1e6:.1f}M',
        f'{r["compile_s"]:.1f}',
        f'{step["median"]:.1f}',
        f'{step["min"]:.1f}-{step["max"]:.1f}',
        f'{r["tokens_per_s"]:,.0f}',
        f'{100 * r["mfu"]:.1f}%',
        '-' if xla is None else f'{xla / 1e9:,.1f}',
        f'{ratio["median"]:.2f}x' if ratio else '-',
        f'{ratio["min"]:.2f}-{ratio["max"]:.2f}' if ratio else '-',
        f'{r["x_hf_by_flops"]:.2f}x' if r.get('x_hf_by_flops') else '-',
      ]
    )
  versions = ', '.join(f'{k} {v}' for k, v in result['versions'].items())
  by_model = {r['model']: r['peak_flops_per_device'] for r in result['runners']}
  peaks = ', '.join(f'{p / 1e9:,.1f} ({m})' for m, p in by_model.items())
  notes = (
    f'{result["batch_size"]} x {result["seq_len"]} tokens per step, {result["dtype"]},'
    f' {result["optimizer"]}, dropout off; {result["devices"]} {result["platform"]} device(s)'
    f' ({result["device_kind"]}, {result["cpu_count"]} CPUs); {versions}.\n'
    f'Interleaved: {result["warmup_steps"]} warm-up step(s) each, then {result["repeats"]}'
    f' rounds of {result["steps_per_round"]} step(s) of every runner, order rotated; step ms'
    ' is the median round (min-max over rounds); x HF = ours tokens/s / HF tokens/s, the'
    ' median of the per-round ratios (min-max).\n'
    f'MFU against {peaks} GFLOP/s per device ({result["peak_flops_source"]}),'
    ' models/flops.py counts (6 x matmul params +'
    ' attention, causal not halved; the gathered MLM head on its predicted positions only).'
    ' GFLOP/step: XLA cost analysis of the compiled step; HF/ours FLOPs: the x HF that'
    ' the work alone would give, ours as fast per FLOP as HF.'
  )
  return step_timing.text_table(header, rows) + '\n' + notes


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(
    prog='python -m bench.throughput',
    description='Training-step throughput of a config, or of ours against Hugging Face.',
    epilog='Any config key can be overridden with --config.key=value.',
    allow_abbrev=False,
  )
  parser.add_argument('--config', default=None, help='Experiment config file.')
  parser.add_argument('--steps', type=int, default=None, help='Timed steps (per round).')
  parser.add_argument('--warmup', type=int, default=None, help='Untimed steps after compiling.')
  parser.add_argument('--json', default=None, help='Also write the record to this file.')
  parser.add_argument('--compare', choices=['hf'], default=None, help="'hf': ours vs HF Flax.")
  parser.add_argument(
    '--models',
    default=','.join(COMPARE_MODELS),
    help='--compare: presets to compare, comma-separated (BERT-like or GPT-2-like).',
  )
  parser.add_argument('--repeats', type=int, default=5, help='--compare: interleaved rounds.')
  args, rest = parser.parse_known_args(argv)
  if not args.compare and not args.config:
    parser.error('--config is required (or --compare hf).')
  spec = args.config or 'configs/base.py'
  models = [m for m in args.models.split(',') if m]
  try:  # Bad configs, overrides and presets fail here, before anything is compiled.
    configs = [compare_config(spec, m, rest) for m in models] if args.compare else []
    config = configs[0] if configs else loading.load(spec, rest)
  except (ValueError, FileNotFoundError, KeyError) as e:
    parser.error(str(e))
  if args.compare:
    steps = 2 if args.steps is None else args.steps
    warmup = 1 if args.warmup is None else args.warmup
    record = compare_hf(spec, rest, models=models, repeats=args.repeats, steps=steps, warmup=warmup)
    table = format_comparison(record)
  else:
    steps = 10 if args.steps is None else args.steps
    warmup = 2 if args.warmup is None else args.warmup
    record = run(config, steps=steps, warmup=warmup)
    table = format_table([record])
  print(table)
  print(json.dumps(record, indent=2))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(record, f, indent=2)
  return record


if __name__ == '__main__':
  main(sys.argv[1:])
