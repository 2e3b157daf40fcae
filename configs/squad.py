"""SQuAD v1.1 / v2.0 fine-tuning as BERT's run_squad.py (Devlin et al. 2019, Sec. 4.2-4.3).

  python train.py --config configs/squad.py:v1.1 --workdir /tmp/squad11 \\
      --config.init_from=$BERT_BASE   # a converted checkpoint (models/convert) or a train.py run
  python eval.py --config configs/squad.py:v1.1 --workdir /tmp/squad11
  python train.py --config configs/squad.py:v2.0 --workdir /tmp/squad20 \\
      --config.init_from=$BERT_LARGE

Data: data.squad_file / data.eval_squad_file (train-v1.1.json, dev-v1.1.json from the SQuAD
site), or TFDS 'squad/v1.1' / 'squad/v2.0' when they are empty (data/tasks.py).
Rows: [CLS] question (<= 64 tokens) [SEP] document window [SEP], 384 tokens, windows every 128
document tokens (objectives/span_qa.py, data/squad.py).

Recipe: AdamW, 10% linear warmup then linear decay (run_squad's warmup_proportion 0.1), weight
decay 0.01, 2 epochs (`num_epochs`, sized from the questions read). v1.1: learning rate 3e-5,
batch 32 (the BERT README's rate and epochs with the paper's batch); 87,599 training questions
-> 5,475 steps. v2.0: learning rate 5e-5, batch 48 (paper, Sec. 4.3); 130,319 questions ->
5,430 steps. Like run_squad.py, steps count questions, not windows, so "2 epochs" covers
slightly fewer than 2 passes over the windows. The window and decoding settings are
objectives/span_qa.py's defaults (doc stride 128, 64 query tokens, n-best 20, answers of at
most 30 tokens), run_squad's.

CMRC 2018 (Chinese, Cui et al. 2019): configs/squad.py:cmrc2018 with data.squad_file /
eval_squad_file in CMRC's competition layout (../shared/data/zh/cmrc2018: cmrc2018_trial.json,
cmrc2018_dev.json; data/squad.cmrc_records locates the answers, which come without offsets),
each CJK character a word of its own (data/squad.context_words, as BERT), scored with CMRC's
character-level exact match and F1 (`objective.qa_metric='cmrc'`; columns cmrc_em, cmrc_f1).
CKPT should be a Chinese checkpoint (bert-base-chinese); the SQuAD recipe is kept.

Hardware: one accelerator with >= 16 GB (BERT-Base, 384 tokens, batch 32); BERT-Large for v2.0
wants more memory or a smaller batch. Expected result: not yet measured here. The paper's dev
scores (c.reference): v1.1 BERT-BASE EM 80.8 / F1 88.5 (Table 2); v2.0 BERT-LARGE EM 78.7 /
F1 81.9 (Table 3, no-answer threshold tuned on dev, as eval reports squad2_em / squad2_f1).
"""

from configs import base

_VERSIONS = {
  # version: (objective.version, preset, learning rate, batch, reference)
  'v1.1': (1, 'bert-base', 3e-5, 32, ('BERT-BASE', 'Table 2', 80.8, 88.5)),
  'v2.0': (2, 'bert-large', 5e-5, 48, ('BERT-LARGE', 'Table 3', 78.7, 81.9)),
  'cmrc2018': (1, 'bert-base', 3e-5, 32, None),
}
_EPOCHS = 2


def get_config(arg: str = 'v1.1'):
  if arg not in _VERSIONS:
    raise ValueError(f'configs/squad.py:{arg}: expected one of {sorted(_VERSIONS)}.')
  version, preset, lr, batch_size, reference = _VERSIONS[arg]
  c = base.get_config()
  c.model.preset = preset
  c.objective.module = 'objectives.span_qa'
  c.objective.task = arg  # eval.json's task.
  c.objective.version = version  # 2: unanswerable questions, null score and threshold.
  c.data.source = 'squad'
  c.data.tfds_name = f'squad/{arg}'  # Read when data.squad_file / eval_squad_file are empty.
  c.seq_len = 384
  c.batch_size = batch_size
  c.total_steps = 0  # Sized from the training questions read, as run_squad counts steps.
  c.num_epochs = _EPOCHS
  c.optimizer.learning_rate = lr
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.schedule = 'linear'
  c.optimizer.weight_decay = 0.01
  c.log_every_steps = 100
  c.checkpoint_every_steps = 0  # With every evaluation.
  c.eval_every_steps = 1000
  if arg == 'cmrc2018':  # Chinese: the files in CMRC's layout, its character-level metric.
    c.objective.qa_metric = 'cmrc'
    c.data.tfds_name = ''
    c.reference.scores, c.reference.source = {}, ''
    return c
  model, table, em, f1 = reference
  prefix = 'squad2' if version == 2 else 'squad'
  c.reference.scores = {f'{prefix}_em': em, f'{prefix}_f1': f1}
  c.reference.source = f'Devlin et al. 2019, {table}, {model} (single), SQuAD {arg} dev'
  return c
