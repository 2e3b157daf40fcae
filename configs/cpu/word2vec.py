"""word2vec skip-gram with negative sampling on the embedded corpus (CPU).

  python train.py --config configs/cpu/word2vec.py --workdir /tmp/w2v
  python train.py --config configs/cpu/word2vec.py --workdir /tmp/cbow \
      --config.model.preset=word2vec-cbow

Hardware: any laptop CPU, no network (the SentencePiece model is trained into
the workdir on the fly; its piece probabilities are the unigram frequencies).
The paper's sampling settings (window 5, 5 noise words from unigram^0.75),
vectors 128 wide instead of 300 for speed, and word2vec.c's default
subsampling threshold 1e-3 (the paper's 1e-5 suits a 100B-word corpus, not one
of ~100k pieces). Expected (measured on a 2-core CPU shared with other jobs, 1
device): loss 4.03 over the first 25 steps (6 ln 2 = 4.16 at the start: every
score is 0), 2.71 at step 100, 2.51 at step 300; held-out loss 2.60, accuracy
(positive pair above all its noise words) 0.29; about 15k tokens/s, 1.5
minutes in all. These are this repository's own figures; the paper evaluates
its vectors on word analogies (Mikolov et al. 2013b, Table 2), which a corpus
this small cannot support.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 'word2vec-skipgram'
  c.model.d_model = 128  # The paper's 300 runs at a third of the speed on a CPU.
  c.objective.module = 'objectives.word2vec'
  c.data.source = 'embedded'
  c.data.vocab_size = 4096
  c.total_steps = 300
  c.batch_size = 32
  c.seq_len = 128
  c.log_every_steps = 25
  c.checkpoint_every_steps = 150
  c.eval_every_steps = 150
  c.optimizer.learning_rate = 1e-2
  c.optimizer.warmup_steps = 0
  c.optimizer.warmup_ratio = 0.1  # 30 of the 300 steps.
  c.optimizer.weight_decay = 0.0
  return c
