"""K-BERT (Liu et al. 2020): sentence (pair) classification with a knowledge file's triples
spliced into each row.

  python train.py --config configs/kbert.py:chnsenticorp --workdir /tmp/kbert \\
    --config.init_from=CKPT --config.objective.knowledge_file=KG.tsv \\
    --config.data.clue_dir=../shared/data/zh
  python train.py --config configs/kbert.py:sst2 ... --config.data.glue_dir=../shared/data/glue

The argument is a GLUE or Chinese (configs/clue.py) classification task: that recipe and
data with objectives/kbert.py. KG.tsv holds head<TAB>relation<TAB>tail triples
(data/knowledge.py documents the format and the sentence tree); up to
`objective.max_triples` per entity are spliced in, read through soft positions and the
visible matrix. The encoder and classifier are BERT's own (a checkpoint loads as it is).

Hardware: as configs/glue.py; the visible matrix keeps attention on the XLA path (no
cuDNN / splash kernel takes a dense mask). Expected: the paper's gains (Table 2: +0.5-1
point on Chinese tasks with CN-DBpedia / HowNet) need those knowledge graphs, which are
not in this repository; measured here only on a synthetic task where the label lives in
the knowledge file (README).
"""

from configs import clue, glue


def get_config(task: str = 'sst2'):
  c = clue.get_config(task) if task in clue.TASKS else glue.get_config(task)
  c.objective.module = 'objectives.kbert'
  c.objective.knowledge_file = ''  # Required: head<TAB>relation<TAB>tail triples.
  c.objective.max_triples = 2  # Triples per entity (K-BERT's default).
  return c
