"""Task-adaptive pretraining (TAPT): masked-LM on the task's own text, then fine-tuning.

  python -m tools.task_text --config configs/glue.py:sst2 \\
      --config.data.glue_dir=../shared/data/glue --out /tmp/sst2_text.txt
  python train.py --config configs/dapt.py:sst2 --workdir /tmp/tapt \\
      --config.init_from=CKPT --config.data.text_files=/tmp/sst2_text.txt
  python train.py --config configs/glue.py:sst2 --workdir /tmp/sst2 --config.init_from=/tmp/tapt

Gururangan et al. 2020, "Don't Stop Pretraining", section 4: continuing the pretraining
objective on the unlabelled training text of the task itself helps even after
domain-adaptive pretraining. CKPT is a converted checkpoint (`python -m models.convert`) or
a train.py run; it sizes the model and brings its tokenizer, as for fine-tuning. A run's
MaskedLM parameters, MLM head included, load whole; a converted encoder without an MLM head
(sentence-transformers' MiniLM) starts the head fresh, which warm-up absorbs. The TAPT run
dir is then the `init_from` of the task config: its encoder is loaded and its MLM head left
behind. The argument after the colon is a GLUE task (configs/glue.py), 'conll' or 'squad'.

Recipe (the paper's appendix, TAPT column): RoBERTa's MLM (15% of tokens, 80/10/10,
dynamic masks), 100 epochs over the task text, batch 256, Adam lr 1e-4 with b2 0.98 and
eps 1e-6, 6% linear warm-up then linear decay, weight decay 0.01, dropout 0.1. Scaled here:
the text is packed into 128-token rows (the fine-tuning length; the paper used 512) rather
than one example per row, and an epoch is counted in packed rows: rows per epoch =
examples x mean tokens per example / 126 (TEXT_SIZES below: measured WordPiece lengths
for most tasks, estimates for the rest), and `total_steps` = 100 epochs of rows / 256.
SST-2: 2,297 steps (~75M tokens); MNLI: about 49,000 -- large tasks are costly at 100 epochs,
and a lower --config.total_steps is a reasonable cut. Every 20th document is held out for the
MLM evaluation (data.eval_fraction 0.05).

Hardware: one accelerator; BERT-base at batch 256 x 128 tokens wants ~16 GB. Expected
result: not yet measured here; the paper reports TAPT gains of about 0.5-4.5 points of task F1 over
RoBERTa on its eight tasks (Table 5), none of them GLUE.
"""

import math

from configs import base, glue

# (examples in the train split, mean tokens per example): text_a + text_b, a CoNLL sentence,
# a SQuAD context. Measured with bert-base-uncased's WordPiece on up to 3,000 examples of the
# tools.task_text output (GLUE download-script files, CoNLL-2003): cola, sst2, mrpc, stsb, rte,
# wnli, conll; estimated, not measured: qqp, mnli, qnli, squad.
TEXT_SIZES = {
  'cola': (glue.TRAIN_SIZES['cola'], 9),
  'sst2': (glue.TRAIN_SIZES['sst2'], 11),
  'mrpc': (glue.TRAIN_SIZES['mrpc'], 51),
  'stsb': (glue.TRAIN_SIZES['stsb'], 25),
  'qqp': (glue.TRAIN_SIZES['qqp'], 27),
  'mnli': (glue.TRAIN_SIZES['mnli'], 40),
  'qnli': (glue.TRAIN_SIZES['qnli'], 45),
  'rte': (glue.TRAIN_SIZES['rte'], 67),
  'wnli': (glue.TRAIN_SIZES['wnli'], 34),
  'conll': (14_041, 18),  # Sentences of CoNLL-2003 train.
  'squad': (18_896, 150),  # Distinct contexts (paragraphs) of SQuAD v1.1 train.
}
EPOCHS = 100
BATCH_SIZE = 256
SEQ_LEN = 128


def get_config(task: str = 'sst2'):
  if task not in TEXT_SIZES:
    raise ValueError(f'configs/dapt.py:{task}: the task must be one of {sorted(TEXT_SIZES)}.')
  examples, tokens = TEXT_SIZES[task]
  c = base.get_config()
  c.objective.module = 'objectives.mlm'  # base.py's MLM rates: 15%, 80/10/10, dynamic.
  c.data.source = 'text'
  c.data.text_files = ''  # The file `python -m tools.task_text` wrote; required.
  c.data.eval_fraction = 0.05  # Every 20th task document: the held-out MLM loss.
  c.seq_len = SEQ_LEN
  c.batch_size = BATCH_SIZE
  rows_per_epoch = math.ceil(examples * tokens / (SEQ_LEN - 2))  # [CLS] ... [SEP] per row.
  c.total_steps = max(math.ceil(EPOCHS * rows_per_epoch / BATCH_SIZE), 10)
  c.log_every_steps = max(min(c.total_steps // 50, 100), 1)
  c.eval_every_steps = max(c.total_steps // 10, 1)
  c.checkpoint_every_steps = c.eval_every_steps
  c.keep_checkpoints = 1  # Fine-tuning reads the newest one.
  c.model.dropout_rate = 0.1
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.06
  c.optimizer.schedule = 'linear'
  c.optimizer.b2 = 0.98
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01
  return c
