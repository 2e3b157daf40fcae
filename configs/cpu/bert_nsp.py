"""BERT's pretraining recipe, MLM + NSP on sentence pairs, at quickstart scale (CPU).

  python train.py --config configs/cpu/bert_nsp.py --workdir /tmp/bert_nsp
  python -m tools.show --config configs/cpu/bert_nsp.py --workdir /tmp/bert_nsp

Hardware: any laptop CPU, no network. The rows are built as Google's
create_pretraining_data.py builds them (data/sentence_pairs.py: short sequences
with probability 0.1, random split of a chunk of sentences, B from a random
document half of the time); the loss is MLM + NSP with weight 1 each (Devlin et
al. 2019, section 3.1 and appendix A.2). `loss`/`accuracy` in the log are MLM's,
`sentence_order/loss`/`accuracy` NSP's, `total_loss` their sum. The model is
bert-tiny (2 x 128); for BERT-base set model.preset='bert-base', seq_len=512.
Expected figures: see the README's objectives table (this repository's own
measurements; the paper reports NSP accuracy 97-98% at BERT-base scale).
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.mlm:1.0,objectives.sentence_order:1.0'  # module:weight, ...
  return c
