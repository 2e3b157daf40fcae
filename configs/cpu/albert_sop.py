"""ALBERT's pretraining recipe, MLM + SOP, at quickstart scale (CPU).

  python train.py --config configs/cpu/albert_sop.py --workdir /tmp/albert_sop

Hardware: any laptop CPU, no network. The albert-base architecture
(factorized embeddings E=128, one block shared by every layer) cut to 2 layers of
128 so that a CPU trains it in minutes; sentence-order prediction swaps two
consecutive segments of one document half of the time (Lan et al. 2020, section
3.1 and 4.1; rows as data/sentence_pairs.py). Drop the size overrides for the
real ALBERT-base (11.7M parameters). Expected figures: see the README's
objectives table (this repository's own measurements).
"""

from configs.cpu import bert_nsp


def get_config():
  c = bert_nsp.get_config()
  c.model.preset = 'albert-base'
  c.model.num_layers, c.model.d_model, c.model.num_heads, c.model.mlp_dim = 2, 128, 2, 512
  c.objective.pair_kind = 'sop'
  return c
