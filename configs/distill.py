"""Knowledge distillation into a smaller student (objectives/distill.py), on a task or on text.

Task distillation (a GLUE task, the teacher fine-tuned on it with configs/glue.py):

  python train.py --config configs/distill.py:sst2 --workdir /tmp/student \
    --config.teacher=/tmp/teacher_sst2 --config.data.glue_dir=../shared/data/glue \
    [--config.objective.distill.method=pkd|tinybert|minilm]
  python eval.py --config configs/distill.py:sst2 --workdir /tmp/student

The student is the teacher's architecture with teacher layers 0, 2 and 4
(`objective.distill.student_layers`, DistilBERT's "one layer out of two" of a 6-layer
teacher such as all-MiniLM-L6-v2; for a 12-layer BERT-BASE teacher set it to
0,2,4,6,8,10), initialized from them. Set it to '' and size the student with
`model.preset` / `model.*` (or `init_from` a general-distilled student, TinyBERT's
second stage) to train a student of another shape. Each method's weights and
temperature follow its paper's task-distillation setting:
- distilbert: hard 1, soft 1 at T = 2, cosine 1 (Sanh et al. 2019 weight their
  pretraining losses 5 / 2 / 1; the task setting is not given, so equal weights);
- pkd: alpha = 0.5 (hard 0.5, soft 0.5) at T = 10, beta = 100 (Sun et al. 2019, section
  4.2: alpha in {0.2, 0.5, 0.7}, T in {5, 10, 20}, beta in {10, 100, 500, 1000});
- tinybert: intermediate layers and prediction together (`tinybert_stage` 'all'; the
  paper runs 'intermediate' then 'prediction', two runs with init_from), T = 1, no hard
  loss (Jiao et al. 2020, section 3.3 and 4.2);
- minilm: last-layer attention and value relations plus the hard and soft losses
  (Wang et al. 2020 distil task-agnostically and then fine-tune; here on the task);
- mobilebert: every layer's feature map (MSE) and attention distributions (KL) plus the
  hard and soft losses, for a student as deep and as wide between blocks as its
  teacher (Sun et al. 2020 transfer them during pretraining, from IB-BERT).
The recipe is configs/glue.py's (AdamW, linear decay, 3 epochs, dev score twice per
epoch, best checkpoint kept) at learning rate 5e-5, which small students need.

General distillation (TinyBERT's first stage, or DistilBERT's pretraining-time
distillation) on pretraining text, with MLM as the student's own objective:

  python train.py --config configs/distill.py:general --workdir /tmp/general \
    --config.teacher=/tmp/mlm_teacher [--config.data.source=text --config.data.text_files=...]

The teacher must have an MLM head (a train.py MLM run, or a checkpoint converted with its
MLM head, e.g. bert-base-uncased); the student is `model.preset` (tinybert-4 here: 4
layers x 312, fresh), trained on the embeddings', attention scores' and hidden states'
MSE through learned projections to the teacher's width.

Hardware: a CPU distils a 6-layer, 384-wide teacher into a 3-layer student (bench/
compression.py); BERT-BASE teachers want an accelerator. Expected: see the README's
compression table (measured here, all-MiniLM-L6-v2 on SST-2); the papers' own figures
are DistilBERT 91.3 SST-2 dev (Sanh et al. 2019, Table 1, from BERT-BASE 92.7),
BERT6-PKD 92.0 SST-2 test (Sun et al. 2019, Table 1), TinyBERT4 92.6 (Jiao et al. 2020,
Table 1, with data augmentation).
"""

from configs import base
from configs import glue as glue_config

METHODS = {
  'distilbert': dict(hard_weight=1.0, soft_weight=1.0, hidden_weight=1.0, temperature=2.0),
  'pkd': dict(hard_weight=0.5, soft_weight=0.5, hidden_weight=100.0, temperature=10.0),
  'tinybert': dict(hard_weight=0.0, soft_weight=1.0, hidden_weight=1.0, temperature=1.0),
  'minilm': dict(hard_weight=1.0, soft_weight=1.0, hidden_weight=1.0, temperature=1.0),
  'mobilebert': dict(hard_weight=1.0, soft_weight=1.0, hidden_weight=1.0, temperature=1.0),
}


def get_config(arg: str = 'sst2'):
  task, _, method = arg.partition(',')
  method = method or ('tinybert' if task == 'general' else 'distilbert')
  if method not in METHODS:
    raise ValueError(f'configs/distill.py:{arg}: the method must be one of {sorted(METHODS)}.')
  if task == 'general':
    c = base.get_config()
    c.model.preset = 'tinybert-4'
    c.data.source = 'embedded'
    c.total_steps = 1000
    c.batch_size = 32
    c.seq_len = 128
    c.eval_every_steps = 500
    c.objective.distill.base = 'objectives.mlm'
    c.objective.distill.tinybert_stage = 'intermediate'
    c.objective.distill.student_layers = ''
    c.optimizer.learning_rate = 1e-4  # TinyBERT's general distillation: 1e-4, 10% warm-up.
    c.optimizer.warmup_steps = 0
    c.optimizer.warmup_ratio = 0.1
  else:
    c = glue_config.get_config(task)
    c.objective.distill.base = c.objective.module
    c.objective.distill.student_layers = '0,2,4'
    c.optimizer.learning_rate = 5e-5
  c.objective.module = 'objectives.distill'
  c.objective.distill.method = method
  for key, value in METHODS[method].items():
    c.objective.distill[key] = value
  return c
