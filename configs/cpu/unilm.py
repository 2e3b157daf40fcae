"""UniLM (Dong et al. 2019) at quickstart scale on the embedded corpus (CPU): one tiny
BERT trained with bidirectional, left-to-right, right-to-left and seq2seq attention masks.

  python train.py --config configs/cpu/unilm.py --workdir /tmp/unilm
  python -m tools.show --config configs/cpu/unilm.py

Hardware: any laptop CPU, no network. The kinds are mixed per packed segment in the
paper's proportions (section 2.3: 1/3 bidirectional, 1/3 seq2seq, 1/6 each way of
the unidirectional third), all with MLM's 15% cloze masking (80/10/10). Measured
for 100 steps only (--config.total_steps=100, 2-core CPU, 1 device): training loss
8.18 over steps 1-25, 6.47 over steps 76-100 (quickstart MLM: 6.47 at step 100),
about the same for each kind; held-out loss 6.76 (bidirectional 6.45, left-to-right
6.64, right-to-left 7.01, seq2seq 6.95). These are this repository's figures, not the
paper's. Expected for the full 500 steps: not yet measured.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.unilm'
  return c
