"""Pretraining objectives side by side: the same corpus, tokenizer, steps and batch.

  python -m bench.pretrain_compare --text /work/shared/data/wikitext-2/valid.txt \
      --steps 300 --json /tmp/pretrain_compare.json

Runs `train.py` once per objective config (each config's own tiny model; the
objective's keys as the config sets them), one after another in fresh processes,
with one SentencePiece model trained on the corpus by the first run and shared by
the others. Prints, per objective, the mean training loss of the first and last
25 steps and the held-out figures, and writes them as JSON. Losses of different
objectives measure different tasks: compare each with its own start and chance
(ln vocab), not with each other.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, config file, extra overrides)
OBJECTIVES = {
  'mlm': ('configs/quickstart.py', ()),
  'wwm': ('configs/cpu/wwm.py', ()),
  'spanbert': ('configs/cpu/spanbert_sbo.py', ()),
  'electra': ('configs/cpu/electra.py', ()),
  't5': ('configs/cpu/t5.py', ()),
  'bert_nsp': ('configs/cpu/bert_nsp.py', ()),
}


def _run(name: str, config: str, extra, args, workdir: str, tokenizer: str) -> dict:
  overrides = [
    f'--config.total_steps={args.steps}',
    f'--config.batch_size={args.batch}',
    f'--config.seq_len={args.seq_len}',
    '--config.log_every_steps=25',
    f'--config.eval_every_steps={args.steps}',
    f'--config.checkpoint_every_steps={args.steps}',
    '--config.optimizer.warmup_steps=30',
    '--config.optimizer.warmup_ratio=0',
    '--config.data.source=text',
    f'--config.data.text_files={args.text}',
    f'--config.data.vocab_size={args.vocab}',
    *extra,
  ]
  if tokenizer:
    overrides.append(f'--config.data.tokenizer_path={tokenizer}')
  start = time.time()
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, 'train.py'), f'--config={os.path.join(ROOT, config)}',
     f'--workdir={workdir}', *overrides],
    cwd=ROOT, capture_output=True, text=True,
  )  # fmt: skip
  if result.returncode:
    raise RuntimeError(f'{name} failed:\n{result.stderr[-3000:]}')
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if 'loss' in r]
  held_out = [r for r in records if 'eval/loss' in r][-1]
  return {
    'objective': name,
    'config': config,
    'first_loss': train[0]['loss'],
    'last_loss': train[-1]['loss'],
    'eval_loss': held_out['eval/loss'],
    'eval_accuracy': held_out.get('eval/accuracy'),
    'extra': {k: v for k, v in held_out.items() if '/' in k[5:]},  # Auxiliary parts.
    'seconds': time.time() - start,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--text', required=True, help='Text file(s) glob, BERT format.')
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--seq-len', type=int, default=128)
  parser.add_argument('--vocab', type=int, default=4096)
  parser.add_argument('--objectives', default=','.join(OBJECTIVES))
  parser.add_argument('--workdir', default='/tmp/pretrain_compare')
  parser.add_argument('--json', default='')
  parser.add_argument('--tokenizer', default='', help='A SentencePiece model (default: train one).')
  args = parser.parse_args()

  rows, tokenizer = [], args.tokenizer
  for name in args.objectives.split(','):
    config, extra = OBJECTIVES[name]
    workdir = os.path.join(args.workdir, name)
    row = _run(name, config, extra, args, workdir, tokenizer)
    if not tokenizer:  # The first run trained it; the others share it.
      tokenizer = os.path.join(workdir, 'tokenizer', 'spm.model')
    rows.append(row)
    print(json.dumps(row), flush=True)

  print(f'\n{args.steps} steps x {args.batch} x {args.seq_len} on {args.text}')
  print('| objective | config | loss @25 | loss @end | held-out loss | held-out acc | s |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    acc = '-' if r['eval_accuracy'] is None else f'{r["eval_accuracy"]:.3f}'
    print(
      f'| {r["objective"]} | {r["config"]} | {r["first_loss"]:.3f} | {r["last_loss"]:.3f} '
      f'| {r["eval_loss"]:.3f} | {acc} | {r["seconds"]:.0f} |'
    )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
