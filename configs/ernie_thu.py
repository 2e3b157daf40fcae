"""ERNIE-THU (Zhang et al. 2019): sentence (pair) classification with the TransE vectors of
the entities the text mentions fused into the token states.

  python -m tools.transe --knowledge KG.tsv --out /tmp/entities.npz --dim 100
  python train.py --config configs/ernie_thu.py:sst2 --workdir /tmp/ernie_thu \\
    --config.init_from=CKPT --config.objective.entity_file=/tmp/entities.npz \\
    --config.data.glue_dir=../shared/data/glue

The argument is a GLUE or Chinese (configs/clue.py) classification task: that recipe and
data with objectives/ernie_thu.py. KG.tsv is data/knowledge.py's triple file; tools/transe.py
trains its entities' vectors. The model (models/entity_fusion.py): the encoder (from CKPT),
a fusion layer adding each mention's projected vector at its first token, one Transformer
block, BERT's pooler and classifier (the fusion layers start fresh).

Hardware: as configs/glue.py. Expected: the paper's gains (FewRel, TACRED, OpenEntity,
with Wikidata's TransE vectors) need Wikidata and those tasks, neither offline; not
measured. tests/objectives/test_ernie_thu.py trains it on a fixture.
"""

from configs import clue, glue


def get_config(task: str = 'sst2'):
  c = clue.get_config(task) if task in clue.TASKS else glue.get_config(task)
  c.objective.module = 'objectives.ernie_thu'
  c.objective.entity_file = ''  # Required: tools/transe.py's .npz.
  return c
