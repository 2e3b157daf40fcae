"""Quickstart pretraining with and without sequence-length warm-up, at equal tokens (issue 16).

  python -m bench.length_warmup --workdir /tmp/slw_bench --out /tmp/slw [--steps 500]

Two runs of configs/quickstart.py (MLM on the embedded corpus, `--steps` steps of 32 x
128 tokens): `plain`, and `warm-up` with `length_warmup.steps` = `--warmup_steps`, rows
growing from `--start` tokens (data/length_warmup.py). The warm-up run's early steps are
shorter, so it takes the steps that bring it to the plain run's tokens (its learning-rate
schedule is stretched over them). Reported: steps, tokens, wall seconds, the training loss
at 25/50/75/100% of the tokens (each the mean of the logged steps in the 5% of tokens
before that point), and eval.py's held-out MLM loss and accuracy at the end. Writes
<out>.md and <out>.json; finished runs are reused.
"""

import argparse
import json
import os
import time

import numpy as np

from bench import outputs
from configs import quickstart
from data.length_warmup import LengthWarmup
from evaluation import checkpoint_eval, during_training


def configure(args, warm: bool):
  c = quickstart.get_config()
  c.total_steps = args.steps
  if warm:
    c.length_warmup.steps, c.length_warmup.start = args.warmup_steps, args.start
    c.length_warmup.multiple = args.multiple
    w = LengthWarmup(c.seq_len, args.warmup_steps, args.start, args.multiple)
    target = c.batch_size * c.seq_len * args.steps
    steps = args.steps
    while w.tokens_before(steps, c.batch_size) < target:
      steps += 1
    c.total_steps = steps
  return c


def run(config, workdir: str, plain_steps: int) -> dict:
  path = os.path.join(workdir, 'bench.json')
  if not os.path.exists(path):
    start = time.time()
    during_training.train_to_completion(config, workdir)
    seconds = time.time() - start
    held_out = checkpoint_eval.evaluate_checkpoint(config, workdir)
    with open(path, 'w') as f:
      json.dump({'seconds': seconds, 'eval': held_out}, f)
  with open(path) as f:
    result = json.load(f)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f if '"loss"' in line]
  per_step = config.batch_size * config.seq_len
  tokens = np.asarray([r.get('tokens', r['step'] * per_step) for r in logged], float)
  losses = np.asarray([r['loss'] for r in logged])
  total = per_step * plain_steps  # The plain run's tokens: both runs' points.
  at = {}
  for fraction in (0.25, 0.5, 0.75, 1.0):
    point = fraction * total
    window = (tokens > point - 0.05 * total) & (tokens <= point + 1e-9)
    at[fraction] = float(losses[window].mean()) if window.any() else float('nan')
  result.update(steps=config.total_steps, tokens=int(tokens[-1]), loss_at=at)
  return result


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--workdir', default='/tmp/slw_bench')
  p.add_argument('--out', default='')
  p.add_argument('--steps', type=int, default=500)
  p.add_argument('--warmup_steps', type=int, default=150)
  p.add_argument('--start', type=int, default=16)
  p.add_argument('--multiple', type=int, default=16)
  args = p.parse_args()
  results = {}
  for name, warm in (('plain', False), ('warm-up', True)):
    results[name] = run(configure(args, warm), os.path.join(args.workdir, name), args.steps)
  lines = [
    '| run | steps | tokens | wall s | train loss at 25% / 50% / 75% / 100% of the tokens '
    '| held-out loss | held-out accuracy |',
    '|---|---|---|---|---|---|---|',
  ]
  for name, r in results.items():
    losses = ' / '.join(f'{r["loss_at"][k]:.3f}' for k in sorted(r['loss_at'], key=float))
    lines.append(
      f'| {name} | {r["steps"]} | {r["tokens"]:,} | {r["seconds"]:.0f} | {losses} | '
      f'{r["eval"]["loss"]:.4f} | {r["eval"]["accuracy"]:.4f} |'
    )
  outputs.write('\n'.join(lines), {'settings': vars(args), 'results': results}, args.out)


if __name__ == '__main__':
  main()
