"""Several objectives trained together on one encoder, with weights.

BERT is MLM + NSP, ALBERT MLM + SOP, SpanBERT span masking + SBO; a contrastive or
translation loss can ride along the same way. A config names the parts:

  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.mlm:1.0,objectives.sentence_order:1.0'

The first part is the trunk: a token-prediction objective whose model is
models/heads.MaskedLM (mlm, wwm, span_masking, ...). It gives the framing, the
corruption and the main loss, logged as `loss` / `accuracy` as if it ran alone,
so runs with and without auxiliary parts compare directly. Every later part is
auxiliary and defines:

  AUX_HEAD                 a name in models/heads.AUX_HEADS, put on the trunk's
                           final states (one forward pass serves every part);
  make_aux_preprocess(objective_cfg, tokenizer, seed)
                           -> extra(rows, batch) -> {name: array}: arrays the head
                           and loss read, added to the trunk's batch;
  aux_loss(output, batch, objective_cfg)
                           -> (loss, metrics), logged as `<part>/loss`, ...;
  make_rows (optional)     rows of another shape for every part (NSP's sentence
                           pairs, objectives/sentence_order.py).

The optimized loss is sum_i weight_i * loss_i, logged as `total_loss`.
"""

import dataclasses
from types import ModuleType

import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from models import heads
from objectives import api
from objectives.shared import metrics, token_lm

# Arrays of the trunk's batch passed to MaskedLM, in order (token types for sentence pairs).
_MODEL_INPUTS = ('inputs', 'segment_ids', 'positions', 'token_types')


def config() -> config_dict.ConfigDict:
  """A combination's key."""
  c = config_dict.ConfigDict()
  c.parts = ''  # 'module:weight,...': the trunk first, then auxiliary parts.
  return c


def parse_parts(spec: str) -> list[tuple[str, float]]:
  """'module:weight,module:weight' -> [(module, weight)]; a missing weight is 1."""
  parts = []
  for item in filter(None, (s.strip() for s in spec.split(','))):
    module, _, weight = item.partition(':')
    try:
      parts.append((module.strip(), float(weight) if weight else 1.0))
    except ValueError as e:
      raise ValueError(f'objective.parts item {item!r}: the weight must be a number.') from e
  if len(parts) < 2:
    raise ValueError(
      f'objective.parts={spec!r} must name a trunk and at least one auxiliary objective, '
      "e.g. 'objectives.mlm:1.0,objectives.sentence_order:1.0'."
    )
  return parts


def _part_name(module: ModuleType) -> str:
  return module.__name__.rsplit('.', 1)[-1]


@dataclasses.dataclass(frozen=True)
class Multitask:
  """The objective API (objectives/api.py) for a trunk plus auxiliary parts."""

  trunk: ModuleType
  aux: tuple[ModuleType, ...]
  weights: tuple[float, ...]  # The trunk's first.
  objective_cfg: object = None  # The config's `objective` section, for the auxiliary losses.

  @property
  def FRAMING(self):  # noqa: N802  (the objective API's constant name)
    return self.trunk.FRAMING

  @property
  def SHOW(self):  # noqa: N802
    return self.trunk.SHOW

  @property
  def make_rows(self):
    """The row builder of the one part that has one (None: the loader packs)."""
    builders = [api.row_builder(m) for m in (self.trunk, *self.aux)]
    builders = [b for b in builders if b is not None]
    if len(builders) > 1:
      raise ValueError('At most one objective part may build its own rows (make_rows).')
    return builders[0] if builders else None

  def packed_length(self, objective_cfg, seq_len: int) -> int:
    return api.packed_length(self.trunk, objective_cfg, seq_len)

  def build_model(self, model_cfg):
    model = self.trunk.build_model(model_cfg)
    if not isinstance(model, heads.MaskedLM):
      raise ValueError(
        f'The first objective part, {self.trunk.__name__}, must train heads.MaskedLM '
        f'(an MLM-style trunk), not {type(model).__name__}.'
      )
    return model.clone(aux_heads=tuple(m.AUX_HEAD for m in self.aux))

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    trunk = self.trunk.make_preprocess(objective_cfg, tokenizer, seed)
    extras = [m.make_aux_preprocess(objective_cfg, tokenizer, seed) for m in self.aux]

    def preprocess(rows: dict) -> dict:
      batch = trunk(rows)
      if 'token_types' not in batch:
        batch['token_types'] = rows.get('token_types', np.zeros_like(rows['tokens']))
        batch['token_types'] = batch['token_types'].astype('int32')
      for extra in extras:
        batch.update(extra(rows, batch))
      return batch

    return preprocess

  def loss_fn(self, params, batch, rng, *, model):
    kwargs, targets, weights = token_lm.predictions(batch)  # The trunk's masked positions.
    logits, outputs = model.apply(
      {'params': params},
      *(batch[name] for name in _MODEL_INPUTS),
      deterministic=rng is None,
      aux_inputs=batch,
      rngs=None if rng is None else {'dropout': rng},
      **kwargs,
    )
    loss, out = metrics.token_cross_entropy(logits, targets, weights)
    out.update(token_lm.dropped_metric(batch))
    total = self.weights[0] * loss
    for module, weight in zip(self.aux, self.weights[1:], strict=True):
      part_loss, part_metrics = module.aux_loss(outputs[module.AUX_HEAD], batch, self.objective_cfg)
      total += weight * part_loss
      out.update({f'{_part_name(module)}/{k}': v for k, v in part_metrics.items()})
    out['total_loss'] = (total, jnp.float32(1.0))  # The mean over steps of the optimized loss.
    return total, out

  def eval_summary(self, values: dict[str, float]) -> dict[str, float]:
    return token_lm.eval_summary(values)

  def predicted_length(self, objective_cfg, seq_len: int) -> int:
    """The trunk's positions per row on the vocabulary (its masked ones, for MLM)."""
    return api.predicted_length(self.trunk, objective_cfg, seq_len)

  def loss_terms(self, objective_cfg) -> dict[str, float]:
    """weight_0 x the trunk's mean loss + weight_i x each part's (objectives/api.py)."""
    del objective_cfg
    terms = {'loss': self.weights[0]}
    for module, weight in zip(self.aux, self.weights[1:], strict=True):
      terms[f'{_part_name(module)}/loss'] = weight
    return terms


def configure(objective_cfg) -> Multitask:
  """The combined objective of `objective_cfg.parts` (objectives/api.load calls this)."""
  parts = parse_parts(objective_cfg.parts)
  trunk = api.import_module(parts[0][0], 'objective.parts item')
  missing = api.missing(trunk, api.Objective)
  if missing:
    raise ValueError(
      f'objective.parts trunk {parts[0][0]!r} is not an objective: it lacks {", ".join(missing)}.'
    )
  aux = tuple(api.load_part(path) for path, _ in parts[1:])
  return Multitask(trunk, aux, tuple(w for _, w in parts), objective_cfg)
