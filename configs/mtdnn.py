"""MT-DNN multi-task fine-tuning of BERT-BASE on several GLUE tasks (Liu et al. 2019,
"Multi-Task Deep Neural Networks for Natural Language Understanding", section 4.2).

  python train.py --config configs/mtdnn.py:mrpc,rte,stsb --workdir /tmp/mtdnn \
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue
  python eval.py  --config configs/mtdnn.py:mrpc,rte,stsb --workdir /tmp/mtdnn \
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue

The argument after the colon is the comma-separated task list (default mrpc,rte,stsb,
the GLUE pair tasks whose files ../shared/data/glue holds; the paper trains on all nine).
One shared encoder, one output layer per task (objectives/mtdnn.py); the tasks' train
sets are concatenated and shuffled each epoch, so each task is drawn in proportion to
its size (data/tasks.py). Each task is scored on its own dev split with its GLUE
metric; the best checkpoint is the best on the first task's score.

Recipe, from the paper: learning rate 5e-5, batch 32, 5 epochs, linear warm-up over
10% of the steps then linear decay, dropout 0.1, gradient norm clipped at 1. The paper
trains with Adamax; this config keeps the repository's AdamW (weight decay 0.01).
The paper starts from BERT-LARGE and 512 tokens; this config is BERT-BASE
(`init_from` a converted bert-base-uncased) at 128 tokens, like configs/glue.py. The
paper's per-task fine-tuning stage after multi-task training is configs/glue.py
with init_from=<this run>. Hardware: one accelerator. Expected: not yet measured with
BERT-BASE; on a CPU, tests/training/test_mtdnn.py checks that a short run improves every
task's dev score.

Reference column: None. The paper's Table 2 reports MT-DNN with BERT-LARGE on the GLUE
test server, which a BERT-BASE dev run does not estimate.
"""

from configs import base
from configs import glue as glue_config

EPOCHS = 5


def get_config(tasks: str = 'mrpc,rte,stsb'):
  names = [t.strip() for t in tasks.split(',') if t.strip()]
  unknown = [t for t in names if t not in glue_config.TRAIN_SIZES]
  if not names or unknown:
    raise ValueError(
      f'configs/mtdnn.py:{tasks}: tasks must be among {sorted(glue_config.TRAIN_SIZES)}.'
    )
  c = base.get_config()
  c.model.preset = 'bert-base'
  c.seq_len = 128
  c.batch_size = 32
  c.total_steps = 0  # Sized from the tasks' train records read.
  c.num_epochs = EPOCHS
  c.evals_per_epoch = 2
  c.eval_every_steps = 0  # evals_per_epoch decides.
  c.checkpoint_every_steps = 0  # With every evaluation.
  c.keep_checkpoints = 1
  c.log_every_steps = 50
  c.model.dropout_rate = 0.1
  c.objective.module = 'objectives.mtdnn'
  c.objective.tasks = ','.join(names)
  c.data.source = 'glue'
  c.data.task = ','.join(names)
  c.data.eval_split = ''  # Every task's dev split(s), 'mrpc:dev', ... (data/tasks.py).
  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.schedule = 'linear'
  c.optimizer.weight_decay = 0.01
  c.optimizer.clip_norm = 1.0
  c.benchmark = 'glue'  # No reference (see the docstring).
  return c
