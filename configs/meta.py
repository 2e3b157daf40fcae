"""Meta-learning for few-shot classification of unseen classes: prototypical networks or
first-order MAML over N-way K-shot episodes of a classification task.

  python train.py --config configs/meta.py:thucnews,prototypical --workdir /tmp/proto \\
    --config.init_from=CKPT --config.data.clue_dir=../shared/data/zh/THUCNews
  python train.py --config configs/meta.py:thucnews,fomaml --workdir /tmp/fomaml (same flags)
  python train.py --config configs/meta.py:thucnews,reptile --workdir /tmp/reptile (same flags)
  python eval.py --config configs/meta.py:thucnews,prototypical --workdir /tmp/proto (same flags)

The argument is a task of configs/clue.py or configs/glue.py with enough classes, then the
method: prototypical (objectives/prototypical.py), fomaml (objectives/fomaml.py, with a
prototype-initialized head) or reptile (objectives/reptile.py, FOMAML's inner loop over all
of an episode's records, the meta-direction theta - phi). Episodes (data/episodes.py): 4-way 5-shot with 5 queries per
class; THUCNews's classes 6-9 (politics, sports, game, entertainment) are held out, the
model meta-trains on episodes of classes 0-5 (finance, realty, stocks, education, science,
society) from its dev.txt and is evaluated on 100 fixed episodes of the held-out classes
from test.txt (`data.episodes.*` overrides all of it: `held_out`, `ways`, `shots`, ...).
eval/accuracy is the 4-way 5-shot query accuracy on the unseen classes. The baseline a
meta-trained run must beat, the encoder before any meta-training, is scored by
bench/meta_fewshot.py (evaluation/checkpoint_eval.evaluate_init_from).

Recipe (ours): 2 episodes (80 records of 48 tokens) a step, AdamW at 2e-5 with 10% warm-up
and linear decay, `STEPS` steps; FOMAML's and Reptile's inner loop 3 SGD steps at 1e-3. Hardware: a CPU
for MiniLM-sized models. Expected: meta-training above the untrained encoder on the unseen
classes (Snell et al. 2017 report 5-way 5-shot Omniglot / miniImageNet, not text);
measured on all-MiniLM-L6-v2 in the README's meta-learning section.
"""

from configs import clue, glue

METHODS = {
  'prototypical': 'objectives.prototypical',
  'fomaml': 'objectives.fomaml',
  'reptile': 'objectives.reptile',
}
HELD_OUT = {'thucnews': '6,7,8,9'}
STEPS = 150


def get_config(arg: str = 'thucnews,prototypical'):
  task, _, method = arg.partition(',')
  method = method or 'prototypical'
  if method not in METHODS:
    raise ValueError(f'configs/meta.py:{arg}: the method must be one of {sorted(METHODS)}.')
  c = clue.get_config(task) if task in clue.TASKS else glue.get_config(task)
  c.objective.module = METHODS[method]
  c.data.episodes.ways = 4
  c.data.episodes.shots = 5
  c.data.episodes.queries = 5
  c.data.episodes.held_out = HELD_OUT.get(task, '')
  c.data.episodes.train_count = 2000
  c.data.episodes.eval_count = 100
  c.seq_len = 48
  c.batch_size = 2  # Episodes.
  c.total_steps = STEPS
  c.num_epochs = 0
  c.evals_per_epoch = 0
  c.eval_every_steps = STEPS
  c.checkpoint_every_steps = 50
  c.log_every_steps = 10
  c.optimizer.learning_rate = 2e-5
  c.reference.scores = {}
  c.reference.source = ''
  return c
