"""Quickstart: a tiny BERT (2 layers, 128 wide) trained with MLM on the embedded corpus.

  python train.py --config configs/quickstart.py --workdir /tmp/quickstart

Hardware: any laptop CPU, no network (the corpus is the Python standard
library's documentation topics; the SentencePiece model is trained into the
workdir on the fly). Expected: MLM loss falls from ~8.3 (ln 4096) to about 6
within the run, in under 5 minutes on a 2-core CPU; figures measured for this
repository are in the README.
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
  c.optimizer.warmup_steps = 60
  return c
