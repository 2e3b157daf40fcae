"""ELMo: a tiny character-CNN biLM (elmo-tiny) trained on the embedded corpus.

  python train.py --config configs/cpu/elmo.py --workdir /tmp/elmo

Hardware: any laptop CPU, no network (the SentencePiece model is trained into
the workdir on the fly; the char table comes from its pieces, 18 characters
wide). Expected (measured on a 2-core CPU shared with other jobs, 1 device):
the mean loss of the first 25 steps is 8.06 (ln 4096 = 8.32 is chance), 6.45
at step 100, 5.56 at step 400; held-out loss 6.03 (forward 6.11, backward 5.96,
perplexity 418), accuracy 0.118; about 2,200 tokens/s, 3.5 minutes in all.
These are this repository's own figures, not a paper's: the paper's model is
the 'elmo' preset (93.6M parameters, 1B Word Benchmark, perplexity 39.7 averaged
over both directions after 10 epochs: Peters et al. 2018, Section 3.4).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'elmo-tiny'
  c.objective.module = 'objectives.elmo_lm'
  c.data.source = 'embedded'
  c.data.vocab_size = 4096
  c.total_steps = 400
  c.batch_size = 16
  c.seq_len = 64
  c.log_every_steps = 25
  c.checkpoint_every_steps = 200
  c.eval_every_steps = 200
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.075  # 30 of the 400 steps.
  return c
