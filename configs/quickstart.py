"""Quickstart: a tiny BERT (2 layers, 128 wide) trained with MLM on the embedded corpus.

  python train.py --config configs/quickstart.py --workdir /tmp/quickstart

Hardware: any laptop CPU, no network (the corpus is the Python standard
library's documentation topics; the SentencePiece model is trained into the
workdir on the fly). Expected (measured on a 2-core CPU, 1 device): the mean MLM
loss of the first 25 steps is 8.17 (ln 4096 = 8.32 is chance), 6.48 at step 100,
6.06 at step 500; held-out MLM loss 6.36, accuracy 0.097; about 10k tokens/s,
3.5 minutes in all. These are this repository's own figures, not a paper's.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'bert-tiny'
  c.objective.module = 'objectives.mlm'
  c.data.source = 'embedded'
  c.data.vocab_size = 4096
  c.total_steps = 500
  c.batch_size = 32
  c.seq_len = 128
  c.log_every_steps = 25
  c.checkpoint_every_steps = 250
  c.eval_every_steps = 250
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.12  # 60 of the 500 steps (and 12% of a shortened run).
  return c
