"""Chinese classification fine-tuning: FewCLUE tasks, ChnSentiCorp, THUCNews headlines.

  python train.py --config configs/clue.py:tnews --workdir /tmp/tnews \
    --config.init_from=CKPT --config.data.clue_dir=../shared/data/zh/FewCLUE
  python train.py --config configs/clue.py:chnsenticorp --workdir /tmp/chnsenticorp \
    --config.init_from=CKPT --config.data.clue_dir=../shared/data/zh/ChineseNlpCorpus
  python train.py --config configs/clue.py:thucnews --workdir /tmp/thucnews \
    --config.init_from=CKPT --config.data.clue_dir=../shared/data/zh/THUCNews
  python eval.py  (the same flags)

The argument after the colon is the task: the FewCLUE classification tasks tnews,
iflytek, eprstmt, bustm, ocnli, csl, csldcp, cluewsc (CHID is multiple choice, not
read), chnsenticorp or thucnews (data/tasks.py gives each source's files and splits).
CKPT is a converted Chinese checkpoint (e.g. bert-base-chinese through
`python -m models.convert`) or a pretraining run; it sizes the model and brings its
tokenizer. BERT's Chinese WordPiece splits CJK characters itself; with a SentencePiece
tokenizer add --config.data.chinese_chars=True to split them before it.

Recipe: BERT's GLUE recipe (configs/glue.py: 128 tokens, batch 32, AdamW 2e-5 with 10%
warm-up and linear decay, weight decay 0.01, dropout 0.1, 3 epochs), which CLUE's
baselines also start from; FewCLUE's few-shot train sets (160 examples for most tasks)
would give 15 steps in 3 epochs, so every task trains at least MIN_STEPS steps (our
choice, not a paper's), and the dev score is evaluated about 20 times a run, the best
evaluation's params kept in <workdir>/best. THUCNews: the shared copy has no train.txt,
so it trains on dev.txt (10k) and is scored on test.txt (10k); with the full release
pass --config.data.train_split=train --config.data.eval_split=dev. ChnSentiCorp's one
file is split 80/10/10 by row number (data/tasks.py). Score: accuracy (CLUE's metric
for these tasks). Hardware: one accelerator. Expected: not yet measured with a
pretrained Chinese model here.

Reference column: None. FewCLUE (Xu et al. 2021) and CLUE (Xu et al. 2020) publish
fine-tuning baselines, but on their test sets, with their own per-task searches, and
we could not verify the figures here; ChnSentiCorp's hotel-review file and THUCNews'
10k test split have no standard published split.
"""

from configs import base

# task -> (data.source, num_labels, train examples). num_labels are the label lists of
# data/clue.py (FewCLUE's own tables; csldcp's labels_all.txt and THUCNews' class.txt
# name 67 and 10 classes: tests/data/test_tasks.py checks them against the files);
# train sizes count the train split this config reads (FewCLUE train_few_all.json,
# ChnSentiCorp's 80%, THUCNews' dev.txt), to pick the epochs; the steps are counted from
# the records actually read (num_epochs).
TASKS = {
  'tnews': ('fewclue', 15, 1185),
  'iflytek': ('fewclue', 119, 3024),
  'eprstmt': ('fewclue', 2, 160),
  'bustm': ('fewclue', 2, 160),
  'ocnli': ('fewclue', 3, 160),
  'csl': ('fewclue', 2, 160),
  'csldcp': ('fewclue', 67, 2036),
  'cluewsc': ('fewclue', 2, 160),
  'chnsenticorp': ('chnsenticorp', 2, 6212),
  'thucnews': ('thucnews', 10, 10000),
}
EPOCHS = 3
MIN_STEPS = 200  # Few-shot sets: 3 epochs of 160 examples would be 15 steps.
EVALS_PER_RUN = 20


def get_config(task: str = 'tnews'):
  if task not in TASKS:
    raise ValueError(f'configs/clue.py:{task}: the task must be one of {sorted(TASKS)}.')
  source, num_labels, train_size = TASKS[task]
  c = base.get_config()
  c.seq_len = 128
  c.batch_size = 32
  c.total_steps = 0  # Sized from the train records read.
  # 3 epochs, or as many as MIN_STEPS takes on the split's usual size, ~EVALS_PER_RUN evals.
  c.num_epochs = max(EPOCHS, MIN_STEPS * c.batch_size / train_size)
  c.evals_per_epoch = EVALS_PER_RUN / c.num_epochs
  c.eval_every_steps = 0  # evals_per_epoch decides.
  c.checkpoint_every_steps = 0  # With every evaluation.
  c.keep_checkpoints = 1
  c.log_every_steps = 25
  c.model.dropout_rate = 0.1
  c.objective.module = 'objectives.classification'
  c.objective.task = task  # Not a GLUE name: classification scores it by accuracy.
  c.objective.num_labels = num_labels
  c.data.source = source
  c.data.task = task if source == 'fewclue' else ''
  c.data.eval_split = 'test' if task == 'thucnews' else 'dev'
  c.data.train_split = 'dev' if task == 'thucnews' else 'train'
  c.optimizer.learning_rate = 2e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1
  c.optimizer.schedule = 'linear'
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-6
  c.benchmark = 'clue'  # No reference: see the docstring.
  return c
