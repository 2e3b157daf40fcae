"""Knowledge distillation: a student trained on its own objective and on a frozen teacher.

  python train.py --config configs/distill.py:sst2 --workdir W --config.teacher=TEACHER \
    --config.data.glue_dir=../shared/data/glue

The student's own objective (`distill.base`: objectives.classification for a task,
objectives.mlm during pretraining) gives its rows, batches, predictions and its own
("hard") loss, unchanged; this objective adds what the teacher says. The teacher's
forward pass runs inside the jitted loss on the same inputs, deterministic, with
frozen parameters: they come in as `teacher=api.Teacher(model, params)`
(training/teacher.py loads them, sharded by the student's rules, and the train step
passes them apart from the train state: no gradient, no optimizer state, never in the
student's checkpoints). Without a teacher (evaluation), the loss is the base
objective's, so a distilled student is scored as any other run.

`distill.method`:
- `distilbert` (Sanh et al. 2019): hard loss + soft targets at temperature T + the cosine
  between the student's and the teacher's final hidden states (same width).
- `pkd` (Sun et al. 2019, BERT-PKD): (1 - alpha) hard + alpha soft + beta x the normalized
  [CLS] states of student layers 1..M-1 against teacher layers: `pkd_strategy` 'skip'
  (every N/M-th: 2, 4 of 6) or 'last' (the last M-1 before the top: 4, 5 of 6).
- `tinybert` (Jiao et al. 2020): embedding MSE, attention-score MSE and hidden-state MSE
  per mapped layer (g(m) = m N / M), through learned W_e, W_h when the widths differ
  (models/student.WithProjections); then prediction-layer soft targets. `tinybert_stage`:
  'intermediate' (general distillation on pretraining text, and task distillation's
  first stage), 'prediction', or 'all'.
- `minilm` (Wang et al. 2020): KL of the last layer's self-attention distributions and
  value relations, split into `relation_heads` heads, so any student width works.
- `mobilebert` (Sun et al. 2020, section 3.3): layer-wise knowledge transfer from an
  inverted-bottleneck teacher, trained jointly ("auxiliary knowledge transfer"): the MSE
  of every mapped layer's feature map (the block outputs, which MobileBERT keeps as wide
  as its teacher's) and the KL of its per-head self-attention distributions, plus the
  soft and hard losses.
The loss is hard_weight x hard + soft_weight x soft + hidden_weight x the method's
intermediate term; `loss_terms` declares exactly that for gradient accumulation.
`distill.layer_map` overrides the mapped teacher layers; `distill.student_layers`
builds the student from those teacher layers and initializes it from them
(DistilBERT's "one layer out of two": training/resume.py, models/student.take_layers).
"""

import dataclasses

import jax.numpy as jnp
from ml_collections import config_dict

from models import intermediates, student
from objectives import api
from objectives.shared import distillation as losses

METHODS = ('distilbert', 'pkd', 'tinybert', 'minilm', 'mobilebert')
TINYBERT_STAGES = ('intermediate', 'prediction', 'all')
PKD_STRATEGIES = ('skip', 'last')


def config() -> config_dict.ConfigDict:
  """Distillation's keys, under `objective.distill`."""
  c = config_dict.ConfigDict()
  c.distill = config_dict.ConfigDict()
  c.distill.base = 'objectives.classification'  # The student's own objective (module path).
  c.distill.method = 'distilbert'  # distilbert, pkd, tinybert or minilm.
  c.distill.temperature = 2.0  # Soft targets' temperature T (the soft loss is x T^2).
  c.distill.hard_weight = 1.0  # The base objective's loss (labels, MLM targets).
  c.distill.soft_weight = 1.0  # Soft targets: KL to the teacher's outputs (MSE: regression).
  c.distill.hidden_weight = 1.0  # The method's intermediate term (cosine, PKD's beta, ...).
  c.distill.layer_map = ''  # Teacher layers (0-based) for the mapped student layers; ''
  # maps uniformly (PKD: by pkd_strategy).
  c.distill.pkd_strategy = 'skip'  # BERT-PKD: 'skip' (every k-th) or 'last' layers.
  c.distill.tinybert_stage = 'all'  # TinyBERT: 'intermediate', 'prediction' or 'all'.
  c.distill.relation_heads = 0  # MiniLM: relation heads (0: the teacher's attention heads).
  c.distill.student_layers = ''  # Teacher layers the student is made of and initialized
  # from, e.g. '0,2,4' ('' : the student is config.model / init_from).
  return c


def parse_layers(spec: str, what: str) -> tuple[int, ...]:
  """'0,2,4' -> (0, 2, 4); '' -> ()."""
  try:
    return tuple(int(s) for s in spec.split(',') if s.strip())
  except ValueError as e:
    raise ValueError(f'{what}={spec!r}: expected comma-separated layer indices.') from e


def mapped_layers(method: str, spec: str, strategy: str, student: int, teacher: int):
  """(student layers, teacher layers) compared by the intermediate loss, 0-based.

  Uniform (DistilBERT's init, TinyBERT's g(m) = m N / M, PKD-Skip): student layer j <->
  teacher layer (j + 1) N / M - 1, the top with the top. PKD compares layers 1..M-1 only
  (its prediction loss covers the top); PKD-Last takes the M-1 teacher layers below the
  top. MiniLM compares the last layers only. An explicit `spec` lists the teacher layers
  of the first len(spec) student layers (MiniLM: one, the teacher layer of the student's
  last).
  """
  if method == 'minilm':
    chosen = parse_layers(spec, 'objective.distill.layer_map') or (teacher - 1,)
    return (student - 1,), chosen[-1:]
  count = student - 1 if method == 'pkd' else student
  chosen = parse_layers(spec, 'objective.distill.layer_map')
  if not chosen:
    if method == 'pkd' and strategy == 'last':
      chosen = tuple(range(teacher - student, teacher - 1))
    else:
      if teacher % student:
        raise ValueError(
          f'A {student}-layer student of a {teacher}-layer teacher: the layers do not map '
          'uniformly; set objective.distill.layer_map (teacher layers, 0-based).'
        )
      chosen = tuple((j + 1) * (teacher // student) - 1 for j in range(count))
  if len(chosen) > count or min(chosen, default=0) < 0 or max(chosen, default=0) >= teacher:
    raise ValueError(
      f'objective.distill.layer_map={chosen}: at most {count} teacher layers in 0..{teacher - 1}.'
    )
  return tuple(range(len(chosen))), chosen


class _Recorder:
  """Stands in for the model in the base objective's loss: runs it, and keeps the call's
  inputs, outputs and sown intermediates, so that the teacher runs on exactly the inputs
  the base objective built (gathered MLM positions included) and the distillation terms
  read the student's states without the base objective knowing."""

  def __init__(self, model):
    self.model = model
    self.args = self.kwargs = self.output = self.sown = None

  def apply(self, variables, *args, **kwargs):
    if 'method' in kwargs or 'mutable' in kwargs:
      raise ValueError('Distillation supports base objectives that call the model plainly.')
    output, state = self.model.apply(variables, *args, mutable=['intermediates'], **kwargs)
    self.args, self.kwargs, self.output = args, kwargs, output
    self.sown = state['intermediates']
    return output


def _logits(output):
  """A model's main output: MaskedLM with auxiliary heads returns (logits, {...})."""
  return output[0] if isinstance(output, tuple) else output


@dataclasses.dataclass(frozen=True)
class Distillation:
  """The objective API (what `configure` returns): the base's, plus the teacher terms."""

  base: object  # The base objective (module or configured object); it reads the same
  # `config.objective` section.
  method: str
  temperature: float
  hard_weight: float
  soft_weight: float
  hidden_weight: float
  layer_map: str
  pkd_strategy: str
  tinybert_stage: str
  relation_heads: int

  @property
  def FRAMING(self):  # noqa: N802 (the protocol's name)
    return self.base.FRAMING

  @property
  def SHOW(self):  # noqa: N802
    return self.base.SHOW

  def build_model(self, model_cfg):
    """The student as the base objective builds it (without TinyBERT's projections: a
    model to evaluate or export)."""
    return self.base.build_model(model_cfg)

  def build_student(self, model_cfg, teacher_cfg):
    """The student trained against `teacher_cfg`'s teacher: the base model, with W_e and
    W_h when TinyBERT compares states of different widths."""
    model = self.base.build_model(model_cfg)
    if self.method == 'tinybert' and model_cfg.d_model != teacher_cfg.d_model:
      return student.WithProjections(model, teacher_cfg.d_model)
    return model

  def build_teacher(self, teacher_cfg):
    """The teacher's model: the base objective's model at the teacher's size."""
    return self.base.build_model(teacher_cfg)

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    return self.base.make_preprocess(objective_cfg, tokenizer, seed)

  def eval_summary(self, values: dict) -> dict:
    return self.base.eval_summary(values)

  def __getattr__(self, name):
    # The base's optional hooks (make_rows, predict_fn, decode_predictions, labels,
    # predicted_length, ...) are the student's. Only names the base has are found, so
    # api.load still sees a pretraining base as a pretraining objective.
    if name.startswith('__') or name == 'base':
      raise AttributeError(name)
    return getattr(self.base, name)

  def loss_terms(self, objective_cfg) -> dict[str, float]:
    """hard_weight x the base's terms, plus each distillation term's weight."""
    terms = {k: self.hard_weight * c for k, c in api.loss_terms(self.base, objective_cfg).items()}
    for name, weight in self._terms().items():
      terms[f'distill/{name}'] = weight
    return terms

  def _terms(self) -> dict[str, float]:
    """{distillation metric: coefficient} of this method."""
    soft = {'soft': self.soft_weight}
    if self.method == 'distilbert':
      return {**soft, 'cosine': self.hidden_weight}
    if self.method == 'pkd':
      return {**soft, 'patient': self.hidden_weight}
    if self.method == 'minilm':
      return {**soft, 'attention': self.hidden_weight, 'value': self.hidden_weight}
    if self.method == 'mobilebert':
      return {**soft, 'feature': self.hidden_weight, 'attention': self.hidden_weight}
    intermediate = {n: self.hidden_weight for n in ('embedding', 'attention', 'hidden')}
    if self.tinybert_stage == 'intermediate':
      return intermediate
    if self.tinybert_stage == 'prediction':
      return soft
    return {**intermediate, **soft}

  def loss_fn(self, params, batch, rng, *, model, teacher: api.Teacher | None = None):
    """The base objective's loss, plus the distillation terms when a teacher is given.

    Returns:
      (loss, metrics): the base's metrics as they are (its `loss` is the student's own
      loss), `distill/<term>` (sum, weight) pairs, and `total_loss`.
    """
    recorder = _Recorder(model)
    loss, metrics = self.base.loss_fn(params, batch, rng, model=recorder)
    if teacher is None:
      return loss, metrics
    kwargs = dict(recorder.kwargs, deterministic=True)
    kwargs.pop('rngs', None)
    output, state = teacher.model.apply(
      {'params': teacher.params}, *recorder.args, mutable=['intermediates'], **kwargs
    )
    terms = self._distill_terms(params, model, batch, recorder, output, state['intermediates'])
    metrics = dict(metrics, **{f'distill/{k}': v for k, v in terms.items()})
    total = self.hard_weight * loss
    for name, weight in self._terms().items():
      total_sum, total_weight = terms[name]
      total = total + weight * total_sum / jnp.where(total_weight > 0, total_weight, 1.0)
    metrics['total_loss'] = (total, jnp.float32(1.0))
    return total, metrics

  def _distill_terms(self, params, model, batch, recorder, teacher_output, teacher_sown):
    """{term: (sum, weight)} of this method."""
    segment_ids = batch['segment_ids']
    tokens = (segment_ids > 0).astype(jnp.float32)  # [batch, length]
    s_logits, t_logits = _logits(recorder.output), _logits(teacher_output)
    terms = {}
    if 'soft' in self._terms():
      weights = _prediction_weights(batch, s_logits)
      if s_logits.shape[-1] == 1 and s_logits.ndim == 2:  # A regression (STS-B).
        terms['soft'] = losses.soft_mse(s_logits, t_logits, weights)
      else:
        terms['soft'] = losses.soft_kl(s_logits, t_logits, weights, self.temperature)
    if self.method == 'tinybert' and self.tinybert_stage == 'prediction':
      return terms
    s, t = intermediates.stack(recorder.sown), intermediates.stack(teacher_sown)
    pairs = zip(*mapped_layers(self.method, self.layer_map, self.pkd_strategy,
                               len(s.layers), len(t.layers)), strict=True)  # fmt: skip
    pairs = [(s.layers[i], t.layers[j]) for i, j in pairs]
    if self.method == 'distilbert':
      terms['cosine'] = losses.hidden_cosine(s.layers[-1].output, t.layers[-1].output, tokens)
    elif self.method == 'pkd':
      rows = tokens[:, 0]
      parts = [losses.normalized_mse(a.output[:, 0], b.output[:, 0], rows) for a, b in pairs]
      terms['patient'] = _sum_over_layers(parts)
    elif self.method == 'minilm':
      (a, b), heads = pairs[0], self.relation_heads or t.layers[-1].query.shape[2]
      terms['attention'] = losses.relation_kl(
        (a.query, a.key), (b.query, b.key), segment_ids, heads
      )
      terms['value'] = losses.relation_kl(
        (a.value, a.value), (b.value, b.value), segment_ids, heads
      )
    elif self.method == 'mobilebert':
      terms['feature'] = _sum_over_layers(
        [losses.mse(a.output, b.output, tokens) for a, b in pairs]
      )
      terms['attention'] = _sum_over_layers(
        [
          losses.relation_kl((a.query, a.key), (b.query, b.key), segment_ids, a.query.shape[2])
          for a, b in pairs
        ]
      )
    else:  # TinyBERT's intermediate layers.
      project = _projector(params, model)
      terms['embedding'] = losses.mse(project(s.embedded, 'embedding'), t.embedded, tokens)
      scores = [
        losses.score_mse(
          losses.attention_scores(a.query, a.key),
          losses.attention_scores(b.query, b.key),
          segment_ids,
        )
        for a, b in pairs
      ]
      hidden = [losses.mse(project(a.output, 'hidden'), b.output, tokens) for a, b in pairs]
      terms['attention'] = _sum_over_layers(scores)
      terms['hidden'] = _sum_over_layers(hidden)
    return terms


def _sum_over_layers(parts: list) -> losses.Pair:
  """Per-layer (sum, weight) pairs -> (the sum of the layers' sums, one layer's weight):
  the mean over what counts of the loss summed over layers (PKD's and TinyBERT's sum)."""
  return sum(p[0] for p in parts), parts[0][1]


def _projector(params, model):
  """TinyBERT's W_e / W_h of the student (identity when the widths match)."""
  if not isinstance(model, student.WithProjections):
    return lambda x, which: x
  return lambda x, which: model.apply(
    {'params': params}, x, which, method=student.WithProjections.project
  )


def _prediction_weights(batch: dict, logits):
  """Which rows or positions the soft targets count: a task's real rows, an MLM's
  predicted (gathered) positions, or a token head's real tokens."""
  if logits.ndim == 2:
    return (batch['segment_ids'][:, 0] > 0).astype(jnp.float32)
  if 'masked_weights' in batch and batch['masked_weights'].shape == logits.shape[:2]:
    return batch['masked_weights']
  if 'weights' in batch and batch['weights'].shape == logits.shape[:2]:
    return batch['weights']
  return (batch['segment_ids'] > 0).astype(jnp.float32)


def configure(objective_cfg) -> Distillation:
  """The distillation objective of `objective_cfg.distill` over its base objective."""
  d = objective_cfg.distill
  if d.method not in METHODS:
    raise ValueError(f'objective.distill.method={d.method!r}; expected one of {METHODS}.')
  if d.tinybert_stage not in TINYBERT_STAGES:
    raise ValueError(
      f'objective.distill.tinybert_stage={d.tinybert_stage!r}; expected one of {TINYBERT_STAGES}.'
    )
  if d.pkd_strategy not in ('skip', 'last'):
    raise ValueError(
      f"objective.distill.pkd_strategy={d.pkd_strategy!r}; expected 'skip' or 'last'."
    )
  if d.temperature <= 0:
    raise ValueError(f'objective.distill.temperature={d.temperature} must be > 0.')
  if d.base == 'objectives.distill':
    raise ValueError('objective.distill.base cannot be objectives.distill itself.')
  module = api.import_module(d.base, 'objective.distill.base')
  base = module.configure(objective_cfg) if hasattr(module, 'configure') else module
  parse_layers(d.layer_map, 'objective.distill.layer_map')
  return Distillation(
    base=base,
    method=d.method,
    temperature=float(d.temperature),
    hard_weight=float(d.hard_weight),
    soft_weight=float(d.soft_weight),
    hidden_weight=float(d.hidden_weight),
    layer_map=d.layer_map,
    pkd_strategy=d.pkd_strategy,
    tinybert_stage=d.tinybert_stage,
    relation_heads=int(d.relation_heads),
  )
