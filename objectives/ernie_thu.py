"""ERNIE-THU (Zhang et al. 2019): sentence (pair) classification with the vectors of the
entities the text mentions fused into the token states (models/entity_fusion.py).

The classification objective (objectives/classification.py: its loss, metrics and
decoding) with rows from data/knowledge.encode_entities: the entity names of
`entity_file` (tools/transe.py's .npz of TransE vectors) found in the text as K-BERT finds
heads (longest match per word, case-insensitive, CJK character by character), each
mention's vector at its first token. The vectors ride in the batch as 'entity_vectors'
[batch, length, k] (float32) and 'entity_mask' [batch, length] (bool), read on the host
from the file, so the entity table never occupies the accelerator and stays fixed.
"""

import dataclasses
import functools

from ml_collections import config_dict

from data import knowledge
from models import entity_fusion
from objectives import classification


def config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.entity_file = ''  # tools/transe.py's .npz: entity names and their vectors.
  return c


@dataclasses.dataclass(frozen=True)
class EntityClassification(classification.Classification):
  entity_file: str = ''

  @functools.cached_property
  def entities(self) -> knowledge.EntityVectors:
    """The entity file, read once."""
    if not self.entity_file:
      raise ValueError('objective.entity_file: ERNIE-THU needs tools/transe.py entity vectors.')
    return knowledge.read_entity_vectors(self.entity_file)

  def build_model(self, model_cfg):
    dim = self.entities.vectors.shape[1]
    return entity_fusion.EntityFusionClassifier(model_cfg, self.num_labels, dim)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """One row per record: the encoded pair with its mentions' entity vectors."""
    del objective_cfg, docs, unused
    encode = functools.partial(knowledge.encode_entities, entities=self.entities)
    return stream.map(lambda item: classification.pair_row(item, tokenizer, seq_len, encode))

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    plain = super().make_preprocess(objective_cfg, tokenizer, seed)
    return lambda rows: dict(
      plain(rows),
      entity_vectors=rows['entity_vectors'].astype('float32'),
      entity_mask=rows['entity_mask'].astype(bool),
    )


def configure(objective_cfg) -> EntityClassification:
  base = classification.configure(objective_cfg)
  return EntityClassification(base.task, base.num_labels, str(objective_cfg.entity_file))
