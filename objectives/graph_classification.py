"""Sentence (pair) classification with graph layers over the token states (models/graph.py):
the classification objective (objectives/classification.py: its rows, loss, metrics and
decoding) with a graph per row (data/graphs.py: tokens linked within `graph_window`
positions and repeated tokens) and the model GraphSequenceClassifier: the encoder,
`graph_layers` GCN or GAT layers (`graph_kind`), a mean over the real tokens and a linear
layer. The adjacency rides in the batch as 'adjacency' [batch, length, length] (int8).
"""

import dataclasses

import numpy as np
from ml_collections import config_dict

from data import graphs
from models import graph
from objectives import classification


def config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.graph_layers = 2  # Graph layers on the encoder's states.
  c.graph_kind = 'gcn'  # 'gcn' (Kipf & Welling 2017) or 'gat' (Velickovic et al. 2018).
  c.graph_window = 2  # Link tokens at most this many positions apart (and repeated tokens).
  return c


@dataclasses.dataclass(frozen=True)
class GraphClassification(classification.Classification):
  layers: int = 2
  kind: str = 'gcn'
  window: int = 2

  def build_model(self, model_cfg):
    return graph.GraphSequenceClassifier(model_cfg, self.num_labels, self.layers, self.kind)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """Classification's rows with each one's token graph."""
    rows = super().make_rows(objective_cfg, stream, docs, tokenizer, seq_len=seq_len)

    def with_graph(row: dict) -> dict:
      adjacency = graphs.cooccurrence_adjacency(row['tokens'], row['segment_ids'], self.window)
      return dict(row, adjacency=adjacency)

    return rows.map(with_graph)

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    plain = super().make_preprocess(objective_cfg, tokenizer, seed)
    return lambda rows: dict(plain(rows), adjacency=rows['adjacency'].astype(np.int8))


def configure(objective_cfg) -> GraphClassification:
  base = classification.configure(objective_cfg)
  if objective_cfg.graph_kind not in graph.KINDS:
    raise ValueError(
      f'objective.graph_kind={objective_cfg.graph_kind!r} is not one of {graph.KINDS}.'
    )
  if objective_cfg.graph_layers < 1:
    raise ValueError(f'objective.graph_layers={objective_cfg.graph_layers} must be >= 1.')
  return GraphClassification(
    base.task, base.num_labels, objective_cfg.graph_layers, objective_cfg.graph_kind,
    objective_cfg.graph_window,
  )  # fmt: skip
