"""GLUE fine-tuning, BERT's recipe (Devlin et al. 2019, section 4.1 and appendix A.3).

  python train.py --config configs/glue.py:sst2 --workdir /tmp/sst2 \
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue
  python eval.py --config configs/glue.py:sst2 --workdir /tmp/sst2 \
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue

The argument after the colon is the task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte,
wnli. CKPT is a converted checkpoint (`python -m models.convert`, e.g. bert-base-uncased
or all-MiniLM-L6-v2) or a train.py pretraining run; it sizes the model and brings its
tokenizer. Data: TFDS `glue/<task>` unless data.glue_dir names a folder in the GLUE
download script's layout (../shared/data/glue is one).

Recipe: sequences of 128 tokens, batch 32, AdamW at 2e-5 (BERT searched 5e-5, 3e-5,
2e-5) with 10% linear warm-up (`optimizer.warmup_ratio`) then linear decay, weight decay
0.01, dropout 0.1, 3 epochs (`num_epochs`: the steps are counted from the train records
actually read, so a smaller train.tsv gives a shorter run; `--config.total_steps=N` wins
over the epochs, and the warm-up stays 10% of it); the dev score is evaluated twice per
epoch (`evals_per_epoch`) and the best evaluation's params are kept in <workdir>/best
(eval.py reports them). STS-B is a regression (one output,
squared error); MNLI is evaluated on matched and mismatched dev.

Reference column: BERT-BASE on the GLUE test server, Devlin et al. 2019, Table 1, with
that table's metrics (which are also this config's scores): MCC for CoLA, F1 for MRPC
and QQP, Spearman for STS-B, accuracy for the rest. Dev scores run a point or two
above test scores, and a smaller model (MiniLM) lower: the column is a yardstick, not
a target.

Hardware: one accelerator for BERT-BASE (128 tokens at batch 32 fit 16 GB); a CPU fine-tunes
a small model such as all-MiniLM-L6-v2 (bench/glue_vs_hf.py). Expected: not yet measured
with BERT-BASE here (no GPU was lent); the MiniLM figures measured on a CPU, beside
transformers' on the same batches, are in RESULTS.md.
"""

from configs import base
from data import glue

# Training examples per task (the GLUE download script's train.tsv): the tasks there are;
# a run is sized from the records it reads (num_epochs), whatever data.glue_dir holds.
TRAIN_SIZES = {
  'cola': 8551,
  'sst2': 67349,
  'mrpc': 3668,
  'stsb': 5749,
  'qqp': 363846,
  'mnli': 392702,
  'qnli': 104743,
  'rte': 2490,
  'wnli': 635,
}
# BERT-BASE, GLUE test server, Devlin et al. 2019, Table 1 (percentages).
BERT_BASE_TABLE_1 = {
  'cola': 52.1,
  'sst2': 93.5,
  'mrpc': 88.9,
  'stsb': 85.8,
  'qqp': 71.2,
  'mnli_m': 84.6,
  'mnli_mm': 83.4,
  'qnli': 90.5,
  'rte': 66.4,
}
EPOCHS = 3


def get_config(task: str = 'sst2'):
  if task not in TRAIN_SIZES:
    raise ValueError(f'configs/glue.py:{task}: the task must be one of {sorted(TRAIN_SIZES)}.')
  c = base.get_config()
  c.seq_len = 128
  c.batch_size = 32
  c.total_steps = 0  # Sized at the start from the train records read: EPOCHS passes.
  c.num_epochs = EPOCHS
  c.evals_per_epoch = 2
  c.eval_every_steps = 0  # evals_per_epoch decides.
  c.checkpoint_every_steps = 0  # With every evaluation.
  c.keep_checkpoints = 1
  c.log_every_steps = 25
  c.model.dropout_rate = 0.1
  c.objective.module = 'objectives.classification'
  c.objective.task = task
  labels = glue.get_task(task).labels
  c.objective.num_labels = 1 if labels is None else len(labels)
  c.data.source = 'glue'
  c.data.task = task
  c.data.eval_split = 'dev_matched,dev_mismatched' if task == 'mnli' else 'dev'
  c.optimizer.learning_rate = 2e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.schedule = 'linear'
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-6
  c.benchmark = 'glue'
  columns = ('mnli_m', 'mnli_mm') if task == 'mnli' else (task,)
  c.reference.scores = {k: BERT_BASE_TABLE_1[k] for k in columns if k in BERT_BASE_TABLE_1}
  c.reference.source = 'Devlin et al. 2019 (BERT), Table 1, BERT-BASE, GLUE test server'
  return c
