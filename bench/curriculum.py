"""Fine-tuning with and without a competence curriculum, same steps and seeds (issue 16).

  python -m bench.curriculum --init_from /tmp/minilm --glue_dir ../shared/data/glue \\
      --task sst2 --workdir /tmp/curriculum_bench --out /tmp/curriculum_sst2 [--seeds 0,1]

For each seed, three runs of configs/glue.py:<task> from `--init_from` with the same
recipe (`--steps` steps of `--batch_size` x `--seq_len` tokens at `--learning_rate`), that
differ only in the order of the train records:
  none     the plain per-epoch shuffle;
  length   easiest = fewest tokens, sqrt competence over the first half of the steps
           (Platanios et al. 2019);
  loss     easiest = lowest loss under a reference classifier (tools/difficulty.py; the
           `none` run of the first seed, which saw steps x batch records of the split),
           the same schedule.
Each run keeps its best dev checkpoint (configs/glue.py evaluates at its end) and reports
eval.py's dev score. Writes <out>.md and <out>.json; a finished run is reused.
"""

import argparse
import json
import os
import statistics

from bench import outputs
from configs import base
from configs import glue as glue_config
from evaluation import checkpoint_eval, during_training, fine_tuned_classifier

VARIANTS = ('none', 'length', 'loss')


def configure(args, variant: str, seed: int, difficulty: str):
  c = glue_config.get_config(args.task)
  c.init_from, c.data.glue_dir = args.init_from, args.glue_dir
  c.total_steps, c.batch_size, c.seq_len = args.steps, args.batch_size, args.seq_len
  c.optimizer.learning_rate = args.learning_rate
  c.seed = seed
  if variant != 'none':
    c.curriculum.difficulty = difficulty
    c.curriculum.schedule = 'sqrt'
    c.curriculum.steps = args.steps // 2
  return c


def score(config, workdir: str) -> float:
  path = os.path.join(workdir, 'eval.json')
  if not os.path.exists(path):
    during_training.train_to_completion(config, workdir)
    checkpoint_eval.evaluate_checkpoint(config, workdir)
  with open(path) as f:
    return 100 * float(json.load(f)['scores'][config.objective.task])


def reference_losses(run: str, out: str) -> str:
  """tools/difficulty.py's file for `run`, written once."""
  if not os.path.exists(out):
    fine_tuned_classifier.write_train_losses(run, out, defaults=base.get_config())
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--init_from', required=True)
  p.add_argument('--glue_dir', required=True)
  p.add_argument('--task', default='sst2')
  p.add_argument('--workdir', default='/tmp/curriculum_bench')
  p.add_argument('--out', default='')
  p.add_argument('--seeds', default='0,1')
  p.add_argument('--steps', type=int, default=300)
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--seq_len', type=int, default=64)
  p.add_argument('--learning_rate', type=float, default=5e-5)
  args = p.parse_args()
  seeds = [int(s) for s in args.seeds.split(',') if s]
  results = {v: {} for v in VARIANTS}
  for seed in seeds:
    for variant in VARIANTS:
      difficulty = 'length'
      if variant == 'loss':
        reference = os.path.join(args.workdir, f'none_{seeds[0]}')
        difficulty = reference_losses(reference, os.path.join(args.workdir, 'losses.txt'))
      config = configure(args, variant, seed, difficulty)
      results[variant][seed] = score(config, os.path.join(args.workdir, f'{variant}_{seed}'))
      print(f'{variant} seed {seed}: dev {results[variant][seed]:.2f}', flush=True)
  lines = [
    f'| {args.task}, {args.steps} steps | ' + ' | '.join(f'seed {s}' for s in seeds) + ' | mean |',
    '|---|' + '---|' * (len(seeds) + 1),
  ]
  for variant, per_seed in results.items():
    cells = [f'{per_seed[s]:.2f}' for s in seeds]
    lines.append(
      f'| {variant} | ' + ' | '.join(cells) + f' | {statistics.mean(per_seed.values()):.2f} |'
    )
  outputs.write('\n'.join(lines), {'settings': vars(args), 'scores': results}, args.out)


if __name__ == '__main__':
  main()
