"""K-BERT (Liu et al. 2020): sentence (pair) classification over knowledge-injected rows.

The classification objective (objectives/classification.py: its loss, metrics and
decoding) with each row built by data/knowledge.py: the entities of the text found in
`knowledge_file`, up to `max_triples` triples of each spliced in after it, soft
positions, and the visible matrix, which rides in the batch as 'visible'
[batch, length, length] (bool) and masks the encoder's attention within the segments'
mask (models/heads.KnowledgeClassifier). Same parameters as classification: a BERT
checkpoint loads as it is. An empty knowledge file gives classification's rows.
"""

import dataclasses
import functools

from ml_collections import config_dict

from data import knowledge
from models import heads
from objectives import classification


def config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.knowledge_file = ''  # Triples, head<TAB>relation<TAB>tail a line (data/knowledge.py).
  c.max_triples = 2  # Triples spliced in per entity (K-BERT's default: 2).
  return c


@dataclasses.dataclass(frozen=True)
class KnowledgeClassification(classification.Classification):
  knowledge_file: str = ''
  max_triples: int = 2

  @functools.cached_property
  def graph(self) -> knowledge.KnowledgeGraph:
    """The knowledge file's triples, read once, when the first rows are made."""
    if not self.knowledge_file:
      raise ValueError('objective.knowledge_file: K-BERT needs a file of triples.')
    return knowledge.read_triples(self.knowledge_file)

  def build_model(self, model_cfg):
    return heads.KnowledgeClassifier(model_cfg, self.num_labels)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """One row per record: the knowledge-injected pair, its label and record index."""
    del objective_cfg, docs, unused
    encode = functools.partial(
      knowledge.encode_pair, graph=self.graph, max_triples=self.max_triples
    )
    return stream.map(lambda item: classification.pair_row(item, tokenizer, seq_len, encode))

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    plain = super().make_preprocess(objective_cfg, tokenizer, seed)
    return lambda rows: dict(plain(rows), visible=rows['visible'].astype(bool))


def configure(objective_cfg) -> KnowledgeClassification:
  base = classification.configure(objective_cfg)
  if objective_cfg.max_triples < 1:
    raise ValueError(f'objective.max_triples={objective_cfg.max_triples} must be >= 1.')
  return KnowledgeClassification(
    base.task, base.num_labels, str(objective_cfg.knowledge_file), objective_cfg.max_triples
  )
