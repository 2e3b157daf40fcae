"""MLM plus a contrastive translation-ranking loss on a parallel corpus (CPU).

  python train.py --config configs/cpu/xlm_contrastive.py --workdir /tmp/xlm_contrastive \
      --config.data.text_files=/path/to/pairs.tsv

Hardware: any laptop CPU. The two sides of each `source<TAB>target` line are
encoded apart (two attention segments, language embeddings 0 and 1); MLM masks
15% of both sides, and objectives/contrastive.py asks every source to pick its
translation among the batch's targets (and back) by the cosine of mean-pooled
states over a temperature of 0.05, with weight 1 (in-batch negatives as LaBSE,
Feng et al. 2022; InfoNCE as SimCSE, Gao et al. 2021). `loss` / `accuracy` in
the log are MLM's, `contrastive/*` the ranking's. bert-tiny widths. No parallel
corpus ships here; the tests train it on a fixture they write. Expected figures:
not yet measured on real data.
"""

from configs.cpu import xlm_tlm


def get_config():
  c = xlm_tlm.get_config()
  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.mlm:1.0,objectives.contrastive:1.0'  # module:weight, ...
  return c
