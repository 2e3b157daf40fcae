"""Sentence (pair) classification with graph layers on the Transformer's token states.

  python train.py --config configs/graph.py:sst2 --workdir /tmp/sst2_gcn \\
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue
  python train.py --config configs/graph.py:sst2,gat ...   (graph attention instead)

The argument is a GLUE (or, via configs/clue.py, Chinese) classification task, then
optionally the layer kind. configs/glue.py's recipe and data, with
objectives/graph_classification.py: 2 graph layers (GCN, Kipf & Welling 2017; or GAT,
Velickovic et al. 2018) over each row's token graph (tokens within 2 positions, repeated
tokens: data/graphs.py), mean pooling, a linear classifier. The encoder loads from CKPT;
the graph layers and the classifier start fresh.

Hardware: as configs/glue.py. Expected: not measured yet (the layers are the GNN-for-NLP
entry point; a graph over co-occurrence adds little to a self-attention encoder that
already sees every pair, so expect the glue.py figure, not more).
"""

from configs import clue, glue


def get_config(arg: str = 'sst2'):
  task, _, kind = arg.partition(',')
  c = clue.get_config(task) if task in clue.TASKS else glue.get_config(task)
  c.objective.module = 'objectives.graph_classification'
  c.objective.graph_kind = kind or 'gcn'
  return c
