"""MFU of the project's train step at GPU scale, in bfloat16, per attention implementation.

  python -m bench.gpu_mfu [--impls xla,cudnn] [--cases bert-large-512,...] \\
      [--warmup 2 --repeats 3 --steps 3] [--budget_s 360] [--json gpu_mfu.json]
  python -m bench.gpu_mfu --smoke      # tiny shapes on CPU, seconds (bench/gpu.sh --smoke)

Cases (CASES): BERT-large MLM, 32 x 512 tokens (the masked positions gathered, BERT's
max_predictions_per_seq=80); GPT-2 medium, 8 x 1024; a GPT-2 XL-width decoder (XL's
d_model 1600, 25 heads, MLP 6400; 12 of its 48 layers, so that the XLA reference's
[batch, heads, length, length] scores fit and the sweep stays in minutes), 8 x 1024 and
4 x 2048; T5-base on span corruption's shapes, 32 x 512 encoder and 114 decoder tokens
(T5's).
Each is built from its preset with bfloat16 compute, float32 parameters, dropout off and
`scan_layers` (one compiled layer: compiles in seconds), and trained by the project's
real step (training/state.py) with the objective's loss (objectives/shared/token_lm.py
for MLM and CLM, objectives/shared/seq2seq.py for T5) and AdamW with clipping
(training/optimizers.py, the defaults of configs/base.py) on synthetic packed rows.
The attention implementations of a case (`model.attention_impl`, models/attention.py)
are timed interleaved (bench/step_timing.py); one that cannot run here (cuDNN on a CPU)
is reported as unavailable with the reason, and a case that fails (out of memory) as
failed, and the sweep goes on. `--budget_s` skips the cases left once it is spent.

MFU = models/flops.py's training FLOPs per token (6 x matmul params + attention, causal
not halved; MLM's head on its gathered positions; T5's decoder at its own length) x
tokens/s over the device's dense bfloat16 peak (PEAK_FLOPS: H100 and H200 SXM 989 TFLOP/s,
NVL 835, H100 PCIe 756, A100 312), `--peak_flops`, or on a CPU a measured float32 matmul
peak.
Memory is the compiled step's own (XLA's memory analysis: arguments + temporaries).

Prints a table, then the records as JSON; `--json FILE` also writes them. Exits 1 when a
case failed. Takes no config file: imports JAX, Flax, optax and the project's models,
shared objective helpers and training modules only, no TensorFlow, Grain or
ml_collections (absent from a bare accelerator image).
"""

import argparse
import dataclasses
import json
import sys
import time
import traceback

import jax
import numpy as np

from bench import step_timing
from models import flops, heads, presets
from objectives import clm
from objectives.shared import seq2seq, token_lm
from training import mfu, optimizers, partitioning

# Dense bfloat16 peak FLOP/s by device kind (NVIDIA datasheets), most specific first.
PEAK_FLOPS = (
  ('H100 PCIe', 756e12),
  ('H100 NVL', 835e12),
  ('H200 NVL', 835e12),
  ('H100', 989e12),  # SXM.
  ('H200', 989e12),  # SXM.
  ('A100', 312e12),
)
IMPLEMENTATIONS = ('xla', 'cudnn')


@dataclasses.dataclass(frozen=True)
class Case:
  """One model and shape of the sweep."""

  name: str
  preset: str
  objective: str  # 'mlm', 'clm' or 'span' (T5's span corruption shapes).
  batch_size: int
  seq_len: int
  decoder_len: int = 0  # Encoder-decoders: decoder tokens per row.
  max_predictions: int = 0  # MLM: masked positions gathered per row.
  overrides: tuple[tuple[str, object], ...] = ()  # TransformerConfig fields.


_XL_WIDTH = (('num_layers', 12),)  # GPT-2 XL's width, a quarter of its depth.
CASES = (
  Case('bert-large-512', 'bert-large', 'mlm', 32, 512, max_predictions=80),
  Case('gpt2-medium-1024', 'gpt2-medium', 'clm', 8, 1024),
  Case('gpt2-xl-width-1024', 'gpt2-xl', 'clm', 8, 1024, overrides=_XL_WIDTH),
  Case('gpt2-xl-width-2048', 'gpt2-xl', 'clm', 4, 2048, overrides=_XL_WIDTH),
  Case('t5-base-512', 't5-base', 'span', 32, 512, decoder_len=114),
)
# --smoke: every case at these sizes, on CPU in seconds.
_SMOKE = dict(num_layers=2, d_model=64, num_heads=4, head_dim=16, mlp_dim=128, vocab_size=512)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The `config.optimizer` keys training/optimizers.py reads, at configs/base.py's
  defaults (AdamW, clipping at 1.0), without ml_collections. The schedule is constant:
  the step's cost does not depend on it."""

  name: str = 'adamw'
  learning_rate: float = 1e-4
  warmup_steps: int = 0
  warmup_ratio: float = 0.0
  schedule: str = 'constant'
  end_lr_fraction: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-6
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  freeze: str = ''
  train_top_layers: int = 0
  unfreeze_every: int = 0
  layer_decay: float = 1.0
  recadam_gamma: float = 0.0
  ewc_lambda: float = 0.0


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """`config.mesh` at configs/base.py's defaults: data parallel over every device."""

  data: int = -1
  fsdp: int = 1
  sequence: int = 1
  tensor: int = 1
  strategy: str = 'fsdp_tp'


def smoke_case(case: Case) -> Case:
  """The case at tiny sizes: the same model family, objective and code path."""
  sizes = dict(_SMOKE, num_decoder_layers=2) if case.decoder_len else _SMOKE
  return dataclasses.replace(
    case,
    batch_size=max(2, jax.device_count()),  # Rows split over the devices (data parallel).
    seq_len=max(32, case.seq_len // 16),
    decoder_len=case.decoder_len and 16,
    max_predictions=case.max_predictions and 8,
    overrides=tuple(sizes.items()),
  )


def model_config(case: Case, impl: str, dtype: str):
  """The case's TransformerConfig: bfloat16 compute, no dropout, layers scanned."""
  cfg = presets.get_config(case.preset, **dict(case.overrides))
  max_len = max(cfg.max_len, case.seq_len + cfg.position_offset)  # XL-width at 2048.
  return dataclasses.replace(
    cfg,
    dtype=dtype,
    param_dtype='float32',
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    activation_dropout_rate=0.0,
    attention_impl=impl,
    scan_layers=True,
    max_len=max_len if cfg.position == 'learned' else cfg.max_len,
  )


def _mlm_batch(rows: dict, rng, max_predictions: int, vocab_size: int) -> dict:
  """BERT's corruption's shapes: 15% of the ordinary tokens predicted (80% -> [MASK]),
  at most `max_predictions` per row gathered (objectives/shared/token_lm.py)."""
  tokens = rows['tokens']
  tokenizer = step_timing.SyntheticTokenizer(vocab_size)
  selected = (tokens >= len(tokenizer.special_ids)) & (rng.random(tokens.shape) < 0.15)
  masked = selected & (rng.random(tokens.shape) < 0.8)
  inputs = np.where(masked, tokenizer.mask_id, tokens)
  return token_lm.model_batch(
    rows, inputs=inputs, targets=tokens, weights=selected, max_predictions=max_predictions
  )


def _span_batch(rows: dict, rng, decoder_len: int, vocab_size: int) -> dict:
  """T5's shapes: encoder rows as packed, decoder rows of `decoder_len` with the same
  segments (segment k of the decoder predicts for segment k of the encoder)."""
  seq_len = rows['tokens'].shape[1]
  at = (np.arange(decoder_len) * seq_len) // decoder_len  # Encoder position of each slot.
  segment_ids = rows['segment_ids'][:, at]
  decoder = {'segment_ids': segment_ids, 'positions': seq2seq.segment_positions(segment_ids)}
  targets = rng.integers(7, vocab_size, size=segment_ids.shape) * (segment_ids > 0)
  return seq2seq.model_batch(
    rows, decoder, inputs=rows['tokens'], targets=targets, weights=segment_ids > 0, start_id=0
  )


def host_batches(case: Case, vocab_size: int, num: int, seed: int) -> list[dict]:
  """`num` synthetic batches of the case's objective."""
  rng = np.random.default_rng(seed)
  tokenizer = step_timing.SyntheticTokenizer(vocab_size)
  mlm = case.objective == 'mlm'
  framing = (tokenizer.cls_id, tokenizer.sep_id) if mlm else (tokenizer.bos_id, tokenizer.eos_id)
  rows_per_host = case.batch_size // jax.process_count()
  preprocess = clm.make_preprocess(None, tokenizer, seed)
  batches = []
  for i in range(num):
    rows = step_timing.synthetic_rows(
      rng,
      rows_per_host,
      case.seq_len,
      vocab_size=vocab_size,
      prefix_id=framing[0],
      suffix_id=framing[1],
      first_ordinary_id=len(tokenizer.special_ids),
      example_offset=(jax.process_index() * num + i) * rows_per_host,
    )
    if case.objective == 'mlm':
      batches.append(_mlm_batch(rows, rng, case.max_predictions, vocab_size))
    elif case.objective == 'span':
      batches.append(_span_batch(rows, rng, case.decoder_len, vocab_size))
    else:
      batches.append(preprocess(rows))
  return batches


def build_model(case: Case, cfg):
  """(model, loss_fn) of the case's objective: what objectives/{mlm,clm,span_corruption}.py
  build and train."""
  if case.objective == 'mlm':
    return heads.MaskedLM(cfg), token_lm.loss_fn
  if case.objective == 'span':
    return heads.Seq2SeqLM(cfg), seq2seq.loss_fn
  return clm.build_model(cfg), clm.loss_fn


def datasheet_peak(device_kind: str) -> tuple[float, str] | None:
  """(dense bfloat16 FLOP/s, name) of a device kind in PEAK_FLOPS, else None."""
  for name, peak in PEAK_FLOPS:
    if name in device_kind:
      return peak, name
  return None


def peak_flops(configured: float) -> tuple[float, str]:
  """(FLOP/s per device, source) of MFU's denominator."""
  if configured:
    return configured, 'configured --peak_flops'
  found = datasheet_peak(jax.devices()[0].device_kind)
  if found:
    return found[0], f'{found[1]} dense bfloat16 datasheet peak'
  return mfu.measured_peak_flops(), 'measured float32 matmul peak'


def _memory_bytes(compiled) -> int | None:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # Not every backend reports it.
    return None
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.temp_size_in_bytes)


def run_case(case: Case, impls, *, dtype, peak, warmup, repeats, steps, seed=0) -> list[dict]:
  """One record per implementation of `case`: timed interleaved, or why it did not run."""
  mesh = partitioning.make_mesh(MeshConfig())
  rules = partitioning.logical_rules(MeshConfig.strategy)
  tx = optimizers.build(OptimizerConfig(), total_steps=1)
  records, runners = {}, {}
  batches = None
  for impl in impls:
    cfg = model_config(case, impl, dtype)
    model, loss_fn = build_model(case, cfg)
    predicted = case.max_predictions or case.seq_len
    per_token = flops.model_flops_per_token(
      model, cfg, case.seq_len, decoder_len=case.decoder_len or None, predicted_len=predicted
    )
    records[impl] = record = {
      'case': case.name,
      'preset': case.preset,
      'impl': impl,
      'dtype': dtype,
      'batch_size': case.batch_size,
      'seq_len': case.seq_len,
      'decoder_len': case.decoder_len or None,
      'predicted_len': predicted,
      'num_layers': cfg.num_layers,
      'd_model': cfg.d_model,
      'flops_per_token': per_token,
    }
    batches = batches or host_batches(case, cfg.vocab_size, 2, seed)
    try:
      runner = step_timing.train_step_runner(
        model, tx, loss_fn, batches, mesh=mesh, rules=rules, seed=seed, seq_len=case.seq_len
      )
    except Exception as error:  # Out of memory, a compiler error: report it and go on.
      if isinstance(error, ValueError) and str(error).startswith('attention_impl='):
        record['status'] = f'unavailable: {error}'  # models/attention.py says why.
        continue
      traceback.print_exc()
      record['status'] = f'failed: {type(error).__name__}: {str(error)[:300]}'
      continue
    runners[impl] = runner
    record.update(
      status='ok',
      params=step_timing.param_count(runner.state),
      compile_s=runner.compile_s,
      step_memory_bytes=_memory_bytes(runner.fn),
    )
  try:
    times = step_timing.interleaved(runners, warmup=warmup, repeats=repeats, steps=steps)
  except Exception as error:  # A step that fails at run time (out of memory).
    traceback.print_exc()
    for impl in runners:
      records[impl]['status'] = f'failed: {type(error).__name__}: {str(error)[:300]}'
    return list(records.values())
  tokens = case.batch_size * case.seq_len
  for impl, runner in runners.items():
    record, spread = records[impl], step_timing.spread(times[impl])
    tokens_per_s = tokens / spread['median']
    record.update(
      step_ms={k: v * 1e3 for k, v in spread.items()},
      tokens_per_s=tokens_per_s,
      mfu=record['flops_per_token'] * tokens_per_s / (peak * jax.device_count()),
      final_loss=float(runner.metrics['loss'][0]) / max(float(runner.metrics['loss'][1]), 1.0),
    )
    if 'xla' in runners and impl != 'xla':
      ratios = step_timing.round_ratios(times['xla'], times[impl])
      record['x_xla'] = step_timing.spread(ratios)
  return list(records.values())


def format_table(records: list[dict], peak: float, peak_source: str) -> str:
  header = ['case', 'impl', 'layers x d_model', 'batch x seq', 'params', 'compile s',
            'step ms (median)', 'min-max', 'tokens/s', 'MFU', 'step memory', 'x xla']  # fmt: skip
  rows = []
  for r in records:
    ok = r.get('status') == 'ok'
    shape = f'{r["batch_size"]} x {r["seq_len"]}' + (
      f'/{r["decoder_len"]}' if r['decoder_len'] else ''
    )
    memory = r.get('step_memory_bytes')
    rows.append([
      r['case'],
      r['impl'],
      f'{r["num_layers"]} x {r["d_model"]}' if r['num_layers'] else '-',
      shape,
      f'{r["params"] / 1e6:.1f}M' if ok else '-',
      f'{r["compile_s"]:.1f}' if ok else '-',
      f'{r["step_ms"]["median"]:.1f}' if ok else r['status'].split(':')[0],
      f'{r["step_ms"]["min"]:.1f}-{r["step_ms"]["max"]:.1f}' if ok else '-',
      f'{r["tokens_per_s"]:,.0f}' if ok else '-',
      f'{100 * r["mfu"]:.1f}%' if ok else '-',
      f'{memory / 2**30:.2f} GiB' if ok and memory else '-',
      f'{r["x_xla"]["median"]:.2f}x' if ok and 'x_xla' in r else '-',
    ])  # fmt: skip
  device = jax.devices()[0]
  lines = [step_timing.text_table(header, rows)]
  lines.append(
    f'{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__};'
    f' MFU against {peak / 1e12:,.3f} TFLOP/s per device ({peak_source}); models/flops.py'
    ' counts (causal not halved). x xla: xla step time / this one, median of rounds.'
  )
  lines += [f'{r["case"]} {r["impl"]}: {r["status"]}' for r in records if r['status'] != 'ok']
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
    prog='python -m bench.gpu_mfu',
    description='MFU of the train step at GPU scale, per attention implementation.',
    allow_abbrev=False,
  )
  parser.add_argument('--smoke', action='store_true', help='Tiny shapes (CPU, seconds).')
  parser.add_argument('--cases', default=None, help='Comma-separated case names (default all).')
  parser.add_argument('--impls', default=','.join(IMPLEMENTATIONS), help='Attention impls.')
  parser.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float32'])
  parser.add_argument('--warmup', type=int, default=2, help='Untimed steps per runner.')
  parser.add_argument('--repeats', type=int, default=3, help='Interleaved rounds.')
  parser.add_argument('--steps', type=int, default=3, help='Timed steps per round.')
  parser.add_argument('--budget_s', type=float, default=0, help='Skip cases after this (0: none).')
  parser.add_argument('--peak_flops', type=float, default=0, help='Peak FLOP/s per device.')
  parser.add_argument('--json', default=None, help='Also write the records to this file.')
  args = parser.parse_args(argv)
  known = {case.name: case for case in CASES}
  names = args.cases.split(',') if args.cases else list(known)
  unknown = [n for n in names if n not in known]
  if unknown:
    parser.error(f'unknown cases {unknown}; known: {", ".join(known)}.')
  impls = [i for i in args.impls.split(',') if i]
  cases = [known[n] for n in names]
  if args.smoke:
    cases = [smoke_case(c) for c in cases]
    args.warmup, args.repeats, args.steps = 1, 2, 1
  peak, peak_source = peak_flops(args.peak_flops)
  start, records = time.perf_counter(), []
  for case in cases:
    if args.budget_s and time.perf_counter() - start > args.budget_s:
      records += [_skipped(case, impl, args.dtype, args.budget_s) for impl in impls]
      continue
    records += run_case(
      case,
      impls,
      dtype=args.dtype,
      peak=peak,
      warmup=args.warmup,
      repeats=args.repeats,
      steps=args.steps,
    )
    print(f'{case.name}: done at {time.perf_counter() - start:.0f} s', file=sys.stderr, flush=True)
  print(format_table(records, peak, peak_source))
  print(json.dumps(records, indent=2))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(records, f, indent=2)
  return records


def _skipped(case: Case, impl: str, dtype: str, budget_s: float) -> dict:
  return {
    'case': case.name, 'preset': case.preset, 'impl': impl, 'dtype': dtype,
    'batch_size': case.batch_size, 'seq_len': case.seq_len,
    'decoder_len': case.decoder_len or None, 'num_layers': None, 'd_model': None,
    'status': f'skipped: the --budget_s={budget_s:g} s time budget was spent',
  }  # fmt: skip


if __name__ == '__main__':
  sys.exit(1 if any(r['status'].startswith('failed') for r in main(sys.argv[1:])) else 0)
