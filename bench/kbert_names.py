"""K-BERT against plain classification on a task only the knowledge file can solve (issue 16).

  python -m bench.kbert_names --workdir /tmp/kbert_bench --out /tmp/kbert_names \\
      [--seeds 0,1,2 --steps 100] [--init_from MINILM]

The task, written into the workdir: SST-2-shaped sentences 'the film by <name> was a
story', each name made up of three syllables and good or bad at random; the label is the
name's. The dev sentences use names no train sentence has, and the knowledge file
(kg.tsv) states every name's polarity ('<name> made good films' / 'bad films'). Plain
classification (configs/glue.py:sst2) can only memorize the train names; K-BERT
(configs/kbert.py:sst2) can read the dev names' triples. Both train `--steps` steps of
`--batch_size` rows per seed with the same recipe, from `--init_from` or (by default) a
2-layer, 64-wide BERT from scratch with a SentencePiece model trained on the embedded
corpus. Reports dev accuracy before and after training; writes <out>.md and <out>.json;
a finished run is reused.
"""

import argparse
import json
import os
import random
import statistics

from bench import outputs
from configs import glue as glue_config
from configs import kbert as kbert_config
from configs import quickstart
from data import atomic_files, sources, tokenizers
from evaluation import checkpoint_eval, during_training

VARIANTS = ('plain', 'kbert')


def write_task(root: str, n_train: int, n_dev: int) -> None:
  """The glue/SST-2 files and kg.tsv of the names task (the module doc), seed 0."""
  rng = random.Random(0)
  syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'te', 'vo', 'zu', 'pi']
  names = sorted({''.join(rng.sample(syllables, 3)) for _ in range(400)})[:120]
  polarity = {name: rng.randint(0, 1) for name in names}
  train_names, dev_names = names[:80], names[80:]
  with open(os.path.join(root, 'kg.tsv'), 'w', encoding='utf-8') as f:
    for name in names:
      f.write(f'{name}\tmade\t{"good" if polarity[name] else "bad"} films\n')
  os.makedirs(os.path.join(root, 'glue', 'SST-2'), exist_ok=True)
  for split, n, pool in (('train', n_train, train_names), ('dev', n_dev, dev_names)):
    with open(os.path.join(root, 'glue', 'SST-2', f'{split}.tsv'), 'w') as f:
      f.write('sentence\tlabel\n')
      for _ in range(n):
        name = rng.choice(pool)
        f.write(f'the film by {name} was a story\t{polarity[name]}\n')


def configure(args, variant: str, seed: int, tokenizer_path: str):
  c = kbert_config.get_config('sst2') if variant == 'kbert' else glue_config.get_config('sst2')
  if variant == 'kbert':
    c.objective.knowledge_file = os.path.join(args.workdir, 'kg.tsv')
  c.data.glue_dir = os.path.join(args.workdir, 'glue')
  if args.init_from:
    c.init_from = args.init_from
  else:
    c.data.tokenizer_path = tokenizer_path
    c.model.preset, c.model.num_layers, c.model.d_model = 'bert-tiny', 2, 64
    c.model.num_heads, c.model.mlp_dim = 2, 128
  c.total_steps = c.eval_every_steps = c.checkpoint_every_steps = args.steps
  c.num_epochs = c.evals_per_epoch = 0
  c.batch_size, c.seq_len, c.seed = args.batch_size, args.seq_len, seed
  c.optimizer.learning_rate, c.optimizer.warmup_ratio = args.learning_rate, 0.0
  c.optimizer.warmup_steps, c.model.dropout_rate = 4, 0.0
  return c


def score(config, workdir: str) -> dict:
  path = os.path.join(workdir, 'bench.json')
  if not os.path.exists(path):
    during_training.train_to_completion(config, workdir)
    before = checkpoint_eval.evaluate_init_from(config, os.path.join(workdir, 'start'))
    after = checkpoint_eval.evaluate_checkpoint(config, workdir)
    scores = {'before': before['scores']['sst2'], 'after': after['scores']['sst2']}
    atomic_files.write_text(path, json.dumps({k: 100 * v for k, v in scores.items()}))
  with open(path) as f:
    return json.load(f)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--workdir', default='/tmp/kbert_bench')
  p.add_argument('--out', default='')
  p.add_argument('--init_from', default='')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--steps', type=int, default=100)
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--seq_len', type=int, default=32)
  p.add_argument('--learning_rate', type=float, default=3e-3)
  args = p.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  write_task(args.workdir, 320, 64)
  tokenizer_path = os.path.join(args.workdir, 'spm.model')
  if not args.init_from and not os.path.exists(tokenizer_path):
    documents = sources.load_documents(quickstart.get_config().data, 'train')
    tokenizers.train_sentencepiece(documents, tokenizer_path[:-6], 1000, 10_000, seed=0)
  seeds = [int(s) for s in args.seeds.split(',') if s]
  results = {v: {} for v in VARIANTS}
  for seed in seeds:
    for variant in VARIANTS:
      config = configure(args, variant, seed, tokenizer_path)
      results[variant][seed] = score(config, os.path.join(args.workdir, f'{variant}_{seed}'))
      print(f'{variant} seed {seed}: {results[variant][seed]}', flush=True)
  lines = [
    f'| dev accuracy (unseen names), {args.steps} steps | '
    + ' | '.join(f'seed {s}' for s in seeds) + ' | mean | before training |',
    '|---|' + '---|' * (len(seeds) + 2),
  ]  # fmt: skip
  for variant, per_seed in results.items():
    cells = [f'{per_seed[s]["after"]:.1f}' for s in seeds]
    mean = statistics.mean(r['after'] for r in per_seed.values())
    before = statistics.mean(r['before'] for r in per_seed.values())
    lines.append(f'| {variant} | ' + ' | '.join(cells) + f' | {mean:.1f} | {before:.1f} |')
  outputs.write('\n'.join(lines), {'settings': vars(args), 'scores': results}, args.out)


if __name__ == '__main__':
  main()
