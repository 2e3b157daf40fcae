"""Few-shot classification of unseen classes: the encoder as it is against prototypical
networks, first-order Proto-MAML and Reptile meta-trained on the other classes (issue 16).

  python -m bench.meta_fewshot --init_from /tmp/minilm \\
      --clue_dir ../shared/data/zh/THUCNews --workdir /tmp/meta_bench --out /tmp/meta

configs/meta.py:thucnews,<method>: 4-way 5-shot episodes (5 queries per class); THUCNews
classes 6-9 held out, 100 fixed eval episodes of them from test.txt. Rows:
  untrained     prototypes from `--init_from`'s encoder with no meta-training
                (checkpoint_eval.evaluate_init_from);
  prototypical  `--steps` steps of 2 episodes of classes 0-5, then the same eval;
  fomaml        the same steps with FOMAML's inner loop (3 SGD steps at 1e-3), evaluated
                with the inner loop on each eval episode's support;
  reptile       the same steps with Reptile's meta-direction (the same inner loop over all
                of an episode's records), evaluated as fomaml.
Reports the query accuracy on the held-out classes (over all the eval episodes' queries:
the eval loop averages sums, so no per-episode spread is kept) and the query loss. Writes <out>.md and <out>.json; finished runs are reused.
"""

import argparse
import json
import os

from bench import outputs
from configs import meta as meta_config
from evaluation import checkpoint_eval, during_training


def configure(args, method: str):
  c = meta_config.get_config(f'thucnews,{method}')
  c.init_from, c.data.clue_dir = args.init_from, args.clue_dir
  c.total_steps = c.eval_every_steps = args.steps
  return c


def result(config, workdir: str, train: bool) -> dict:
  path = os.path.join(workdir, 'bench.json')
  if not os.path.exists(path):
    if train:
      during_training.train_to_completion(config, workdir)
      values = checkpoint_eval.evaluate_checkpoint(config, workdir)
    else:
      values = checkpoint_eval.evaluate_init_from(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(path, 'w') as f:
      json.dump({k: v for k, v in values.items() if isinstance(v, int | float)}, f)
  with open(path) as f:
    return json.load(f)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--init_from', required=True)
  p.add_argument('--clue_dir', required=True, help='The THUCNews folder.')
  p.add_argument('--workdir', default='/tmp/meta_bench')
  p.add_argument('--out', default='')
  p.add_argument('--steps', type=int, default=meta_config.STEPS)
  p.add_argument('--methods', default='prototypical,fomaml,reptile')
  args = p.parse_args()
  rows = {'untrained': result(configure(args, 'prototypical'),
                              os.path.join(args.workdir, 'untrained'), train=False)}  # fmt: skip
  for method in args.methods.split(','):
    rows[method] = result(configure(args, method), os.path.join(args.workdir, method), True)
  episodes = configure(args, 'prototypical').data.episodes.eval_count
  lines = [f'| THUCNews classes 6-9, 4-way 5-shot ({episodes} episodes) | query accuracy | loss |',
           '|---|---|---|']  # fmt: skip
  for name, r in rows.items():
    lines.append(f'| {name} | {100 * r["accuracy"]:.2f} | {r["loss"]:.4f} |')
  outputs.write('\n'.join(lines), {'settings': vars(args), 'results': rows}, args.out)


if __name__ == '__main__':
  main()
