"""Prototypical networks (Snell et al. 2017) over the encoder, for few-shot classification
of classes unseen in training.

Each batch row is an N-way K-shot episode (data/episodes.py, `data.episodes.*`): every
record is embedded by the encoder (`objective.pooling`: the mean of its final states, as
sentence-transformers' all-MiniLM-L6-v2 was trained, or the [CLS] state), each class's
prototype is the mean of its K support embeddings, and each query is classified by a
softmax over minus its squared Euclidean distances to the N prototypes. The loss is the
queries' cross-entropy; `accuracy` is the queries'. Evaluation runs the same on the
held-out classes' episodes, so eval/accuracy is the N-way K-shot accuracy on new classes.
The model is the bare encoder (heads.Backbone), so a converted checkpoint loads whole.
"""

import dataclasses

from ml_collections import config_dict

from objectives.shared import episodes


def config() -> config_dict.ConfigDict:
  """The episodic objectives' pooling (objectives/fomaml.py reads it too)."""
  c = config_dict.ConfigDict()
  c.pooling = 'mean'  # Sentence embedding: 'mean' over the real tokens, or 'cls'.
  return c


@dataclasses.dataclass(frozen=True)
class Prototypical(episodes.EpisodicObjective):
  pooling: str

  def loss_fn(self, params, batch, rng, *, model):
    """Query cross-entropy against the support prototypes, over the batch's episodes."""
    x = episodes.embed(params, batch, rng, model, self.pooling)  # [E, M, embed]
    centres = episodes.prototypes(x, batch['onehot'], batch['query'])  # [E, N, embed]
    return episodes.query_loss(episodes.distance_logits(x, centres), batch)


def configure(objective_cfg) -> Prototypical:
  episodes.check_pooling(objective_cfg.pooling)
  return Prototypical(objective_cfg.pooling)
