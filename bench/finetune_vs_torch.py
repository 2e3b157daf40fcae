"""Fine-tuning step time, ours against transformers' PyTorch on the same machine (issue 18).

  python -m bench.finetune_vs_torch --init_from /tmp/minilm [--hf_dir DIR] \\
      [--heads sequence,token] [--dropouts 0.1,0] [--batch_size 32 --seq_len 128] \\
      [--prng_impls threefry2x32,rbg,unsafe_rbg] [--repeats 5 --steps 1 --warmup 2] \\
      [--glue_dir ../shared/data/glue --conll_dir ../shared/data/conll2003] [--out /tmp/ft] \\
      [--gemm_floor]

For each head and dropout rate, two steps on the same batches:

  ours    the step train.py runs (training/state.py: the objective's loss, the config's
          AdamW with gradient clipping and schedule, the guarded update, dropout drawn from
          (seed, step) with `config.prng_impl`, one row per `--prng_impls` entry), from
          `--init_from`'s weights: sequence = configs/glue.py:sst2 (heads.SequenceClassifier,
          2 labels), token = configs/conll.py (heads.TokenClassifier, 9 tags);
  torch   transformers' BertForSequenceClassification / BertForTokenClassification from
          `--hf_dir` (default: the installed all-MiniLM-L6-v2, the checkpoint `--init_from`
          was converted from), model.train() with hidden and attention dropout at the rate,
          torch.optim.AdamW with the config's learning rate, betas, epsilon and weight decay,
          clip_grad_norm_ at the config's norm, zero_grad(set_to_none=True).

The batches are synthetic and shared: random ids of the checkpoint's vocabulary in full
rows of `--seq_len`, random labels (every token tagged). Compilation and `--warmup` steps
are excluded on both sides; the runners are timed interleaved (bench/step_timing.py:
rounds of `--steps` steps of each, the order rotated; the median over `--repeats`
rounds); "torch / ours" is the median of the per-round ratios of their step times (> 1:
ours is faster). Both use every core: torch its default intra-op threads, XLA its own.

With `--glue_dir` (sequence) or `--conll_dir` (token), the host input pipeline's own time
per batch is timed apart: the train loader over the real data (reading, tokenization,
rows, the objective's preprocess) and the copy onto the device, after `--warmup` batches,
so that a slow loader shows up as such (train.py overlaps it with the step,
`data.prefetch`).

With `--gemm_floor`, each head's step is also split into its matrix products
(bench/gemm_floor.py: every dot_general of our step, each timed alone in XLA and in
PyTorch on the same shapes): the sums are the time each framework's GEMMs alone would
take, and each step's excess over its sum is everything else it does (elementwise work,
layout copies, dropout, the optimizer, and its products running slower inside the step
than alone). Writes <out>.md and <out>.json.
"""

import argparse
import os
import time

import jax
import numpy as np

from bench import gemm_floor, outputs, step_timing
from bench.minilm_sts import default_model_dir
from configs import conll as conll_config
from configs import glue as glue_config
from data.loader import ShardSpec
from objectives import api
from training import experiment, harness, model_setup, optimizers, partitioning, pretrained

HEADS = ('sequence', 'token')
PER_HEAD = ('pipeline_ms', 'gemm_floor')  # Per-head figures beside the per-rate ones.


def head_config(head: str, args, dropout: float, prng_impl: str):
  """The fine-tuning config of `head` (see the module doc) at the bench's shapes."""
  config = glue_config.get_config('sst2') if head == 'sequence' else conll_config.get_config()
  config.init_from = args.init_from
  config.batch_size, config.seq_len = args.batch_size, args.seq_len
  config.model.dropout_rate = dropout
  config.prng_impl = prng_impl
  config.total_steps = 1000  # Sizes the learning-rate schedule; nothing runs that long.
  config.data.glue_dir, config.data.conll_dir = args.glue_dir, args.conll_dir
  return config


def synthetic_rows(head: str, rng: np.random.Generator, batch: int, length: int, vocab: int,
                   num_labels: int) -> dict:  # fmt: skip
  """A batch of the task rows `head`'s objective reads: full rows of random ids from the
  upper 90% of the vocabulary (past BERT's special and unused pieces), random labels;
  token rows tag every token."""
  tokens = rng.integers(vocab // 10, vocab, (batch, length)).astype(np.int32)
  rows = {
    'tokens': tokens,
    'segment_ids': np.ones((batch, length), np.int32),
    'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length)).copy(),
    'token_types': np.zeros((batch, length), np.int32),
    'example_id': np.arange(batch, dtype=np.int32),
  }
  if head == 'sequence':
    return dict(rows, label=rng.integers(0, num_labels, batch).astype(np.float32))
  return dict(
    rows,
    labels=rng.integers(0, num_labels, (batch, length)).astype(np.int32),
    label_weights=np.ones((batch, length), np.float32),
    word_numbers=np.broadcast_to(np.arange(1, length + 1, dtype=np.int32), (batch, length)),
  )


def num_labels(objective) -> int:
  return getattr(objective, 'num_labels', None) or len(objective.labels)


def ours(config, host_batches: list[dict], weights: dict, vocab: int) -> step_timing.Runner:
  """train.py's step of `config` from its init_from `weights` (read once by the caller,
  `vocab` embeddings), compiled on the batches."""
  objective = api.load(config.objective.module, config.objective)
  model = objective.build_model(model_setup.model_config(config, vocab))
  tx = optimizers.build(config.optimizer, config.total_steps)

  def with_weights(state, shardings):
    params, _ = pretrained.merge(state.params, weights, shardings.params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return state.replace(params=params, opt_state=opt_state)

  return step_timing.train_step_runner(
    model,
    tx,
    harness.train_loss(config, objective),
    host_batches,
    mesh=partitioning.make_mesh(config.mesh),
    rules=partitioning.logical_rules(config.mesh.strategy),
    seed=config.seed,
    seq_len=config.seq_len,
    prepare=with_weights,
    **harness.step_options(config, objective),
  )


class TorchStep:
  """transformers' model of `head` with PyTorch's AdamW and clipping: one call, one step."""

  def __init__(self, head: str, config, hf_dir: str, host_batches: list[dict], labels: int):
    import torch  # Only this runner needs PyTorch (requirements-parity.txt).
    import transformers

    self.torch = torch
    torch.manual_seed(config.seed)
    cls = (
      transformers.BertForSequenceClassification
      if head == 'sequence'
      else transformers.BertForTokenClassification
    )
    rate = config.model.dropout_rate
    self.model = cls.from_pretrained(
      hf_dir, num_labels=labels, hidden_dropout_prob=rate, attention_probs_dropout_prob=rate
    )
    self.model.train()
    opt = config.optimizer
    self.optimizer = torch.optim.AdamW(
      self.model.parameters(),
      lr=opt.learning_rate,
      betas=(opt.b1, opt.b2),
      eps=opt.eps,
      weight_decay=opt.weight_decay,
    )
    self.clip = opt.clip_norm
    self.batches = [self._tensors(head, b) for b in host_batches]
    self.count = 0

  def _tensors(self, head: str, batch: dict) -> dict:
    t = self.torch
    labels = batch['label'] if head == 'sequence' else batch['targets']
    return {
      'input_ids': t.as_tensor(np.asarray(batch['inputs']), dtype=t.long),
      'attention_mask': t.as_tensor(np.asarray(batch['segment_ids'] > 0), dtype=t.long),
      'token_type_ids': t.as_tensor(np.asarray(batch['token_types']), dtype=t.long),
      'labels': t.as_tensor(np.asarray(labels), dtype=t.long),
    }

  def __call__(self):
    batch = self.batches[self.count % len(self.batches)]
    self.loss = self.model(**batch).loss
    self.loss.backward()
    if self.clip:
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    self.count += 1


def pipeline_seconds(config, workdir: str, warmup: int, batches: int) -> float:
  """Seconds per batch of the train loader over the real data, onto the devices."""
  exp = experiment.build(config, workdir)
  loader = exp.loader('train', ShardSpec.create(config.batch_size, 1, 0, 1))
  sharding = partitioning.batch_sharding(partitioning.make_mesh(config.mesh))
  stream = iter(loader)
  for _ in range(warmup):
    next(stream)
  start = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(partitioning.global_batch(next(stream), sharding))
  return (time.perf_counter() - start) / batches


def run(args) -> dict:
  """{head: {dropout: {runner: figures}, 'pipeline_ms': ...}} (see the module doc)."""
  hf_dir = args.hf_dir or default_model_dir()
  rng = np.random.default_rng(0)
  pretrained_info = model_setup.describe(args.init_from)
  weights = pretrained.load_params(pretrained_info)  # Read once, shared by every runner.
  results = {}
  for head in args.heads.split(','):
    if head not in HEADS:
      raise ValueError(f'--heads: {head!r} is not one of {HEADS}.')
    results[head] = {}
    for dropout in (float(d) for d in args.dropouts.split(',')):
      configs = {
        impl: head_config(head, args, dropout, impl) for impl in args.prng_impls.split(',')
      }
      first = next(iter(configs.values()))
      objective = api.load(first.objective.module, first.objective)
      vocab = pretrained_info.config.vocab_size
      preprocess = objective.make_preprocess(first.objective, None, first.seed)
      host_batches = [
        preprocess(
          synthetic_rows(head, rng, args.batch_size, args.seq_len, vocab, num_labels(objective))
        )  # fmt: skip
        for _ in range(2)
      ]
      runners = {
        f'ours {impl}': ours(c, host_batches, weights, vocab) for impl, c in configs.items()
      }
      if args.gemm_floor and 'gemm_floor' not in results[head]:  # Same products at any rate.
        first_runner = next(iter(runners.values()))
        products = gemm_floor.step_products(
          first_runner.step, first_runner.state, first_runner.batches[0]
        )
        results[head]['gemm_floor'] = gemm_floor.floor(products)
      runners['torch'] = TorchStep(head, first, hf_dir, host_batches, num_labels(objective))
      times = step_timing.interleaved(
        runners, warmup=args.warmup, repeats=args.repeats, steps=args.steps
      )
      figures = {}
      for name, runner in runners.items():
        figures[name] = {
          'step_ms': {k: v * 1e3 for k, v in step_timing.spread(times[name]).items()},
          'torch_over_ours': step_timing.spread(
            step_timing.round_ratios(times['torch'], times[name])
          ),
          'compile_s': getattr(runner, 'compile_s', 0.0),
        }
      results[head][str(dropout)] = figures
    data_dir = args.glue_dir if head == 'sequence' else args.conll_dir
    if data_dir:
      config = head_config(head, args, 0.1, 'threefry2x32')
      seconds = pipeline_seconds(config, os.path.join(args.workdir, head), args.warmup, 20)
      results[head]['pipeline_ms'] = seconds * 1e3
  return results


def table(results: dict, args) -> str:
  lines = [
    f'Fine-tuning step, batch {args.batch_size} x {args.seq_len}, {jax.devices()[0].device_kind}'
    f' ({os.cpu_count()} cores); median of {args.repeats} rounds (min-max).',
    '',
    '| head | dropout | runner | step ms | torch / ours |',
    '|---|---|---|---|---|',
  ]
  for head, by_rate in results.items():
    for rate, figures in by_rate.items():
      if rate in PER_HEAD:
        continue
      for name, f in figures.items():
        ms, ratio = f['step_ms'], f['torch_over_ours']
        ratio_text = '' if name == 'torch' else (
          f'{ratio["median"]:.2f} ({ratio["min"]:.2f}-{ratio["max"]:.2f})'
        )  # fmt: skip
        lines.append(f'| {head} | {rate} | {name} | {ms["median"]:.0f} '
                     f'({ms["min"]:.0f}-{ms["max"]:.0f}) | {ratio_text} |')  # fmt: skip
  pipelines = [(h, r['pipeline_ms']) for h, r in results.items() if 'pipeline_ms' in r]
  if pipelines:
    lines += ['', '| head | host input pipeline ms / batch |', '|---|---|']
    lines += [f'| {h} | {ms:.1f} |' for h, ms in pipelines]
  for head, by_rate in results.items():
    if 'gemm_floor' in by_rate:
      lines += ['', floor_summary(head, by_rate), '', gemm_floor.table(by_rate['gemm_floor'])]
  return '\n'.join(lines)


def floor_summary(head: str, by_rate: dict) -> str:
  """Each runner's step against the sum of its framework's products timed alone."""
  totals = by_rate['gemm_floor']['totals']
  lines = [
    f'{head} step: its {totals["products"]} products ({totals["gflop"]:.1f} GFLOP) each timed'
    f' alone sum to {totals["xla_ms"]:.0f} ms in XLA and {totals["torch_ms"]:.0f} ms in'
    ' PyTorch.',
    '',
    '| dropout | runner | step ms | its products alone ms | the rest ms |',
    '|---|---|---|---|---|',
  ]
  for rate, figures in by_rate.items():
    if rate in PER_HEAD:
      continue
    for name, f in figures.items():
      alone = totals['torch_ms'] if name == 'torch' else totals['xla_ms']
      step = f['step_ms']['median']
      lines.append(f'| {rate} | {name} | {step:.0f} | {alone:.0f} | {step - alone:.0f} |')
  return '\n'.join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--init_from', required=True, help='The converted all-MiniLM-L6-v2.')
  p.add_argument('--hf_dir', default='', help="transformers' checkpoint (default: installed).")
  p.add_argument('--heads', default='sequence,token')
  p.add_argument('--dropouts', default='0.1,0')
  p.add_argument('--prng_impls', default='threefry2x32')
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--seq_len', type=int, default=128)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--steps', type=int, default=1)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--glue_dir', default='')
  p.add_argument('--conll_dir', default='')
  p.add_argument('--workdir', default='/tmp/finetune_vs_torch')
  p.add_argument('--out', default='')
  p.add_argument(
    '--gemm_floor', action='store_true', help="Time each step's products alone, both sides."
  )
  args = p.parse_args(argv)
  results = run(args)
  outputs.write(table(results, args), {'settings': vars(args), 'results': results}, args.out)
  return results


if __name__ == '__main__':
  main()
