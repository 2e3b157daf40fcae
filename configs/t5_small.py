"""T5-small span corruption (Raffel et al. 2020) on the embedded corpus, shaped for a CPU.

  python train.py --config configs/t5_small.py --workdir /tmp/t5_small
  python -m tools.show --config configs/t5_small.py --workdir /tmp/t5_small

Hardware: any laptop CPU, no network. The objective is T5's exactly (noise
density 0.15, mean span length 3, sentinels from the top of the vocabulary
down); the model is the t5-small preset at a quarter width and a third of the
depth (2 + 2 layers, 128 wide) so that a CPU trains it in minutes; drop the
`c.model.*` size overrides for the real 60M-parameter T5-small. Encoder rows are
128 tokens, packed from 143 raw tokens as T5's random_spans_helper computes.
Expected (measured on a 2-core CPU shared with other jobs, 1 device): loss 7.95
at step 25 (ln 4096 = 8.32 is chance), 6.26 at step 100, 5.64 at step 300;
held-out loss 5.63, accuracy 0.248 (sentinels and EOS included in both, as T5
counts them); about 5.5k encoder tokens/s, 5.5 minutes in all with the
tokenizer. Each one-document row gives 29 targets (21 noise tokens, 7
sentinels, EOS) from 143 packed tokens. These are this repository's own
figures; the paper's T5-small is evaluated on GLUE / SuperGLUE after 2**19 steps
on C4 (Raffel et al. 2020, Table 14).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.model.preset = 't5-small'
  c.model.num_layers, c.model.num_decoder_layers = 2, 2
  c.model.d_model, c.model.num_heads, c.model.mlp_dim = 128, 2, 512
  c.objective.module = 'objectives.span_corruption'
  c.data.source = 'embedded'
  c.data.vocab_size = 4096
  c.total_steps = 300
  c.batch_size = 32
  c.seq_len = 128  # Encoder tokens per row; the loader packs packed_length = 143 raw tokens.
  c.log_every_steps = 25
  c.checkpoint_every_steps = 150
  c.eval_every_steps = 150
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 30
  with c.unlocked():
    c.objective.noise_density = 0.15  # Fraction of each segment's tokens dropped as noise.
    c.objective.mean_noise_span_length = 3.0  # Noise tokens per span (spans = noise / this).
    c.objective.num_sentinels = 0  # Sentinels (top non-special ids, descending); 0: as needed.
  return c
