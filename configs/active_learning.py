"""One round of pool-based active learning: a classifier fine-tuned on the labelled records.

  python -m tools.active_learning --config configs/active_learning.py:sst2 \\
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue \\
    --workdir /tmp/al --pool 400 --budget 30 --rounds 3 --strategies random,entropy,bald

The argument after the colon is a GLUE or Chinese classification task (configs/glue.py,
configs/clue.py). tools/active_learning.py sets `data.train_records` to each round's
labelled records (a file of train-split positions) and trains one run per round from
`init_from`; a single round can also be trained by hand:
  python train.py --config configs/active_learning.py:sst2 --workdir W \\
    --config.init_from=CKPT --config.data.glue_dir=... --config.data.train_records=LABELLED

Recipe: the classifier of configs/glue.py (a fresh linear layer on the pooled [CLS]) for a
fixed `STEPS` steps of `BATCH_SIZE` rows of 64 tokens at `LEARNING_RATE` (AdamW, 10%
warm-up, linear decay), whatever the number of labels: 10 labels are seen ~80 times, 30
labels ~27 times. True few-shot (Perez et al. 2021): no dev set picks a checkpoint or
stops training; each round is evaluated once, at its end, on the whole dev split, and only
the tool reads that score.

Hardware: a CPU for MiniLM-sized models (one round: ~1 minute on 2 cores). Expected: the
seed demo's setting (400 unlabelled SST-2 sentences, 30 labels) reports random sampling at
70% and active sampling at 90%; measured on all-MiniLM-L6-v2 in the README's
active-learning section.
"""

from configs import clue, glue

STEPS = 100
BATCH_SIZE = 8
LEARNING_RATE = 5e-5


def get_config(task: str = 'sst2'):
  c = clue.get_config(task) if task in clue.TASKS else glue.get_config(task)
  c.seq_len = 64
  c.batch_size = BATCH_SIZE
  c.total_steps = STEPS
  c.num_epochs = 0
  c.evals_per_epoch = 0
  c.eval_every_steps = STEPS  # Once, at the end.
  c.checkpoint_every_steps = STEPS
  c.log_every_steps = 25
  c.optimizer.learning_rate = LEARNING_RATE
  c.reference.scores = {}
  c.reference.source = ''
  return c
