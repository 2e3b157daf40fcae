"""T5-small span corruption (Raffel et al. 2020) on the embedded corpus, shaped for a CPU.

  python train.py --config configs/cpu/t5.py --workdir /tmp/t5_small
  python -m tools.show --config configs/cpu/t5.py --workdir /tmp/t5_small

Hardware: any laptop CPU, no network. The objective is T5's exactly (noise
density 0.15, mean span length 3, sentinels from the top of the vocabulary
down); the model is the t5-small preset at a quarter width and a third of the
depth (2 + 2 layers, 128 wide) so that a CPU trains it in minutes (the real
60M-parameter T5-small's recipe is configs/paper/t5_small.py). Encoder rows are
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

from configs import quickstart


def get_config():
  c = quickstart.get_config()  # Embedded corpus, batches of 32 x 128, lr 1e-3.
  c.model.preset = 't5-small'
  c.model.num_layers, c.model.num_decoder_layers = 2, 2
  c.model.d_model, c.model.num_heads, c.model.mlp_dim = 128, 2, 512
  c.objective.module = 'objectives.span_corruption'
  c.seq_len = 128  # Encoder tokens per row; the loader packs packed_length = 143 raw tokens.
  c.total_steps = 300
  c.checkpoint_every_steps = 150
  c.eval_every_steps = 150
  c.optimizer.warmup_ratio = 0.1  # 30 of the 300 steps.
  return c
