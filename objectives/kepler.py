"""KEPLER (Wang et al. 2021): masked language modelling and knowledge embedding with one
encoder, the entities embedded from their descriptions.

Loss = MLM (objectives/mlm.py, on the loader's packed rows) + `ke_weight` x KE. For KE each
row draws one triple of `knowledge_file` (data/knowledge.py's format) and one negative
entity, a function of (seed, epoch, example id) as MLM's masks are; the head, the tail and
the negative (which replaces the tail) are embedded as the encoder's final [CLS] state
over [CLS] description [SEP] (`ke_length` tokens), the relation by a table of its own
(models/heads.KnowledgeEmbeddingLM), and KE is the negative-sampling loss
-log sigmoid(gamma - d(h, r, t)) - log sigmoid(d(h, r, t') - gamma) with TransE's L1
distance d = |h + r - t| and gamma = `ke_margin` (objectives/shared/transe.py). One
encoder pass serves the rows' MLM, a second the batch's 3 x batch descriptions.
Descriptions come from `entity_descriptions` (entity<TAB>description a line); an entity
without one is described by its name. With no `knowledge_file` the graph is the embedded
one about Python's built-ins, described by their docstrings (data/python_knowledge.py),
so `python train.py --config configs/kepler.py` runs offline on the embedded corpus. Logged: `loss` (MLM, as if alone), `ke/loss`,
`ke/accuracy` (d(positive) < d(negative)) and `total_loss`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from data import host_random, knowledge, python_knowledge, tasks
from models import heads
from objectives import mlm
from objectives.shared import token_lm, transe

_KE_STREAM = 11  # host_random stream of the triple and negative draws (MLM's are 0-2).


def config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.entity_descriptions = ''  # entity<TAB>description a line; '' describes each by its name.
  c.ke_weight = 1.0  # KE's weight in the loss (MLM's is 1).
  c.ke_margin = 4.0  # gamma of the negative-sampling loss.
  c.ke_length = 32  # Tokens of a description row, [CLS] and [SEP] included.
  return c


def read_descriptions(path: str) -> dict[tuple[str, ...], str]:
  """{entity words: description} of an entity<TAB>description file ('#' lines skipped).

  Raises:
    ValueError: a line that is not two non-empty tab-separated fields, with its number.
  """
  fields = knowledge.tab_fields(path, 2, 'a description is entity<TAB>text')
  return {knowledge.words_of(entity): text for entity, text in fields}


@dataclasses.dataclass(frozen=True)
class Kepler:
  knowledge_file: str
  descriptions_file: str
  weight: float
  margin: float
  length: int

  FRAMING = mlm.FRAMING
  SHOW = mlm.SHOW

  @functools.cached_property
  def vocabulary(self) -> tuple[list, list, np.ndarray]:
    """(entities, relations, triples [n, 3]) of the knowledge file (read once), or of the
    embedded Python graph when there is none."""
    if self.knowledge_file:
      graph = knowledge.read_triples(self.knowledge_file)
    else:
      graph = knowledge.graph_of(python_knowledge.triples())
    entities, relations, triples = knowledge.entity_ids(graph)
    if not len(triples):
      raise ValueError(f'{self.knowledge_file} holds no triples.')
    return entities, relations, triples

  def descriptions(self) -> dict[tuple[str, ...], str]:
    """{entity words: description}: the descriptions file's, or with neither file the
    embedded graph's docstrings."""
    if self.descriptions_file:
      return read_descriptions(self.descriptions_file)
    if self.knowledge_file:
      return {}
    return {knowledge.words_of(k): v for k, v in python_knowledge.descriptions().items()}

  def build_model(self, model_cfg):
    return heads.KnowledgeEmbeddingLM(model_cfg, num_relations=len(self.vocabulary[1]))

  def description_rows(self, tokenizer) -> dict:
    """{'tokens', 'segment_ids'} [entities, length]: each entity's description row."""
    entities = self.vocabulary[0]
    texts = self.descriptions()
    rows = [
      tasks.encode_pair(tokenizer, texts.get(e, knowledge.squad.join_words(e)), None, self.length)
      for e in entities
    ]
    return {name: np.stack([r[name] for r in rows]) for name in ('tokens', 'segment_ids')}

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    masked = mlm.make_preprocess(objective_cfg, tokenizer, seed)
    described = self.description_rows(tokenizer)
    entities, _, triples = self.vocabulary

    def preprocess(rows: dict) -> dict:
      batch = masked(rows)
      draws = host_random.uniform(seed, rows['epoch'], rows['example_id'], 2, _KE_STREAM)
      picked = triples[np.minimum((draws[:, 0] * len(triples)).astype(np.int64), len(triples) - 1)]
      negative = np.minimum((draws[:, 1] * len(entities)).astype(np.int64), len(entities) - 1)
      for name, ids in (('head', picked[:, 0]), ('tail', picked[:, 2]), ('negative', negative)):
        batch[f'ke_{name}'] = described['tokens'][ids].astype(np.int32)
        batch[f'ke_{name}_segments'] = described['segment_ids'][ids].astype(np.int32)
      batch['ke_relation'] = picked[:, 1].astype(np.int32)
      batch['ke_weight'] = (rows['segment_ids'][:, 0] > 0).astype(np.float32)  # Padding: 0.
      return batch

    return preprocess

  def loss_fn(self, params, batch, rng, *, model):
    mlm_key, ke_key = (None, None) if rng is None else jax.random.split(rng)
    mlm_loss, out = token_lm.loss_fn(params, batch, mlm_key, model=model)
    parts = ('ke_head', 'ke_tail', 'ke_negative')
    states = model.apply(
      {'params': params},
      jnp.concatenate([batch[p] for p in parts]),
      jnp.concatenate([batch[f'{p}_segments'] for p in parts]),
      deterministic=rng is None,
      rngs=None if rng is None else {'dropout': ke_key},
      method='describe',
    ).astype(jnp.float32)  # [3 x batch, embed]
    head, tail, negative = jnp.split(states, 3)
    relation = model.apply({'params': params}, batch['ke_relation'], method='relation')
    relation = relation.astype(jnp.float32)
    positive_d = transe.distance(head, relation, tail)
    negative_d = transe.distance(head, relation, negative)
    weights = batch['ke_weight']
    ke_loss, ke_sum = transe.negative_sampling_loss(positive_d, negative_d, self.margin, weights)
    count = jnp.sum(weights)
    out['ke/loss'] = (ke_sum, count)
    out['ke/accuracy'] = (jnp.sum((positive_d < negative_d) * weights), count)
    total = mlm_loss + self.weight * ke_loss
    out['total_loss'] = (total, jnp.float32(1.0))
    return total, out

  def eval_summary(self, values: dict) -> dict:
    return token_lm.eval_summary(values)

  def predicted_length(self, objective_cfg, seq_len: int) -> int:
    return mlm.predicted_length(objective_cfg, seq_len)

  def side_passes(self, objective_cfg, seq_len: int) -> tuple[tuple[int, int], ...]:
    """Per row: the encoder over its head's, tail's and negative's descriptions."""
    del objective_cfg, seq_len
    return ((3, self.length),)

  def loss_terms(self, objective_cfg) -> dict[str, float]:
    """MLM's mean loss + ke_weight x KE's (objectives/api.py)."""
    del objective_cfg
    return {'loss': 1.0, 'ke/loss': self.weight}


def configure(objective_cfg) -> Kepler:
  if objective_cfg.ke_length < 3:
    raise ValueError(f'objective.ke_length={objective_cfg.ke_length}: [CLS], a token, [SEP].')
  return Kepler(
    str(objective_cfg.knowledge_file), str(objective_cfg.entity_descriptions),
    float(objective_cfg.ke_weight), float(objective_cfg.ke_margin), int(objective_cfg.ke_length),
  )  # fmt: skip
