"""Few-shot fine-tuning with PET (Schick & Schütze 2021), and the classifier it is compared with.

  python train.py --config configs/pet.py:sst2 --workdir /tmp/pet_sst2 \\
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue
  python train.py --config configs/pet.py:sst2,classifier --workdir /tmp/clf_sst2 (same flags)
  python train.py --config configs/pet.py:eprstmt --workdir /tmp/pet_eprstmt \\
    --config.init_from=CKPT --config.data.clue_dir=../shared/data/zh/FewCLUE
  python eval.py  (the same flags)

The argument after the colon is a task with a prompt in data/prompts.py (the GLUE
classification tasks, FewCLUE's eprstmt); `,classifier` trains the plain classifier
(objectives/classification.py: a fresh linear layer on [CLS]) on exactly the same examples
with the same recipe, the baseline PET is measured against. CKPT must carry an MLM head
(a train.py MLM run such as a TAPT run of configs/dapt.py, or a converted BERT with its
head): PET scores the pretrained head's words, and a fresh head would make it a
classifier over 30k random outputs. The pattern and verbalizer are data/prompts.py's, the
same prompt GPT-style few-shot evaluation uses (configs/fewshot.py); override them with
--config.objective.pattern='{text_a} It was {answer}.' --config.objective.verbalizer=terrible,great.

Recipe (PET, section 4 and appendix: 250 steps of batch 4 at 1e-5, the same for its
supervised baseline): 16 labelled examples per label drawn from the train split
(`data.train_per_label`; `data.subset_seed` picks another draw: the paper's runs differ
in the examples and the seed, so vary both), AdamW at 1e-5 with 10% warm-up and linear
decay, 128 tokens. True few-shot (Perez et al. 2021): no dev set picks a checkpoint,
the run is evaluated once, at its end, on the whole dev split. eprstmt draws its 16 per
label from FewCLUE's train_few_all.json (160 examples).

Hardware: a CPU for MiniLM-sized models (250 steps of 4 rows). Expected: PET ahead of the
classifier with 32 examples (the paper: Yelp 5-class, 10 examples per label, PET 52.9 vs
supervised 21.1, Table 1); measured on all-MiniLM-L6-v2 in the README's prompt-learning
section.
"""

from configs import clue, glue
from data import prompts

PER_LABEL = 16
STEPS = 250
BATCH_SIZE = 4
LEARNING_RATE = 1e-5


def get_config(arg: str = 'sst2'):
  task, _, variant = arg.partition(',')
  if variant not in ('', 'classifier'):
    raise ValueError(f'configs/pet.py:{arg}: after the task, only ",classifier" is known.')
  if task in clue.TASKS:
    c = clue.get_config(task)
  else:
    c = glue.get_config(task)
  if variant != 'classifier':
    prompts.get(task)  # A task without a prompt fails here, naming those that have one.
    c.objective.module = 'objectives.pet'
  c.data.train_per_label = PER_LABEL
  c.seq_len = 128
  c.batch_size = BATCH_SIZE
  c.total_steps = STEPS
  c.num_epochs = 0
  c.evals_per_epoch = 0
  c.eval_every_steps = STEPS  # Once, at the end: no dev set picks the checkpoint.
  c.log_every_steps = 25
  c.optimizer.learning_rate = LEARNING_RATE
  c.reference.scores = {}
  c.reference.source = ''
  return c
