"""XLNet permutation language modelling: xlnet-tiny on the embedded corpus (CPU).

  python train.py --config configs/cpu/xlnet.py --workdir /tmp/xlnet
  python -m tools.show --config configs/cpu/xlnet.py

Hardware: any laptop CPU, no network. Each row of 128 tokens is read as two
chunks of 64, the second with the first as memory; each (chunk, document) piece
predicts the last 1/6 of a random factorization order (Yang et al. 2019, Section
2.3; the paper's ablation compares K = 6 and 7, and the released pretraining predicts
85 of 512 tokens, about 1/6).
The paper's models are the 'xlnet-base-cased' / 'xlnet-large-cased' presets
(the paper reports downstream scores, not a pretraining loss to compare with).

Measured (2-core CPU shared with other jobs, 1 device) for the first 100 steps only
(--config.total_steps=100, so the schedule decays by step 100): mean loss of the first
25 steps 8.18 (ln 4096 = 8.32 is chance), 7.23 at step 50, 6.45 at step 100; held-out
loss 6.73, accuracy 0.024 (2 batches); 1,800-3,300 tokens/s, 3m20s in all with the
tokenizer training. Expected for the full 500 steps: not yet measured.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()  # Embedded corpus, 500 steps of 32 x 128, lr 1e-3.
  c.model.preset = 'xlnet-tiny'
  c.objective.module = 'objectives.permutation'
  return c
