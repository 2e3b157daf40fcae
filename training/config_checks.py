"""Every numeric and enumerated config value, checked before anything is created.

A bad value used to surface late and far from its key: `batch_size=0` as a bare
StopIteration after the workdir and the tokenizer had been made, a negative rate as
a NumPy error deep in an objective's corruption. `validate(config)` runs first (train.py
calls it before the workdir's logs/ exists, the harness before it builds anything) and
checks the whole config at once: every error names the key, the value and what would be
right, and all of them come in one ValueError, so one run shows every mistake.

What is checked:
- each numeric key against a range (`RANGES`, by dotted key); keys without an entry
  that end in `_rate`, `_fraction`, `_ratio`, `_prob` or `_probs` are fractions in
  [0, 1]; a tuple value (objective.ngram_probs) is checked element by element;
- each enumerated string key against the allowed values its reader defines
  (`choices()`, imported from where they are defined, not copied);
- a few relations between keys: something to train (total_steps or num_epochs), at
  most one mesh axis of -1, warmup by steps or by ratio (not both) within total_steps.

What is not: facts that need the devices or the data (a batch that splits over the
mesh, a seq_len within the model's positions, a file that exists) stay with the code
that knows them (training/partitioning.py, data/sources.py, ...).
"""

import dataclasses
import math

from data import curriculum, sentence_pairs, sources, text_decoding
from models import attention, graph, model_config, presets
from objectives import distill, ernie, span_qa
from objectives.shared import episodes
from training import adversarial, checkpointing, optimizers, partitioning, pruning, state

FRACTION_SUFFIXES = ('_rate', '_fraction', '_ratio', '_prob', '_probs')


@dataclasses.dataclass(frozen=True)
class Range:
  """Values from `low` to `high` (None: unbounded), each end included unless `*_open`;
  `integer` asks for an int; `optional` lets None through (a placeholder that keeps a
  preset's value); `also` lists single values allowed outside the range (mesh's -1)."""

  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  optional: bool = False
  also: tuple = ()

  def allows(self, value) -> bool:
    if value is None:
      return self.optional
    if isinstance(value, bool) or not isinstance(value, int | float):
      return False
    if value in self.also:
      return True
    if self.integer and not isinstance(value, int):
      return False
    if not math.isfinite(value):
      return False
    above = self.low is None or (value > self.low if self.low_open else value >= self.low)
    below = self.high is None or (value < self.high if self.high_open else value <= self.high)
    return above and below

  def describe(self) -> str:
    kind = 'an integer' if self.integer else 'a number'
    if self.low is not None and self.high is not None:
      span = (
        f'{"(" if self.low_open else "["}{self.low}, {self.high}{")" if self.high_open else "]"}'
      )
      text = f'{kind} in {span}'
    elif self.low is not None:
      text = f'{kind} {">" if self.low_open else ">="} {self.low}'
    elif self.high is not None:
      text = f'{kind} {"<" if self.high_open else "<="} {self.high}'
    else:
      text = f'a finite {kind[2:] if self.integer else "number"}'
    prefix = [repr(v) for v in self.also] + (['None'] if self.optional else [])
    return ' or '.join([*prefix, text])


def _at_least(low, **kw) -> Range:
  return Range(low=low, integer=isinstance(low, int), **kw)


COUNT = _at_least(1)  # A size or interval that must be positive.
NON_NEGATIVE_INT = _at_least(0)
NON_NEGATIVE = Range(low=0.0)
POSITIVE = Range(low=0.0, low_open=True)
FRACTION = Range(0.0, 1.0)
DECAY = Range(0.0, 1.0, high_open=True)  # An exponential-average factor: 1 never forgets.
MESH_AXIS = _at_least(1, also=(-1,))
MODEL_SIZE = _at_least(1, optional=True)

RANGES = {
  'seed': NON_NEGATIVE_INT,  # Host randomness mixes it as an unsigned 64-bit integer.
  'total_steps': NON_NEGATIVE_INT,
  'num_epochs': NON_NEGATIVE,
  'evals_per_epoch': NON_NEGATIVE,
  'batch_size': COUNT,
  'num_microbatches': COUNT,
  'seq_len': COUNT,
  'log_every_steps': COUNT,
  'checkpoint_every_steps': NON_NEGATIVE_INT,
  'keep_checkpoints': COUNT,
  'max_bad_steps': COUNT,
  'loss_spike_zscore': NON_NEGATIVE,
  'eval_every_steps': NON_NEGATIVE_INT,
  'eval_steps': NON_NEGATIVE_INT,
  'peak_flops_per_device': NON_NEGATIVE,
  'model.dropout_rate': Range(0.0, 1.0, high_open=True, optional=True),
  'model.num_layers': MODEL_SIZE,
  'model.num_decoder_layers': MODEL_SIZE,
  'model.d_model': MODEL_SIZE,
  'model.num_heads': MODEL_SIZE,
  'model.mlp_dim': MODEL_SIZE,
  'model.embed_dim': MODEL_SIZE,
  'model.adapter_dim': _at_least(0, optional=True),
  'model.lora_rank': _at_least(0, optional=True),
  'model.lora_alpha': _at_least(0.0, optional=True),
  'model.prompt_length': _at_least(0, optional=True),
  'model.prefix_length': _at_least(0, optional=True),
  'model.max_2d_positions': _at_least(0, optional=True),
  # data/sources.py holds out every round(1 / eval_fraction)-th document.
  'data.eval_fraction': Range(0.0, 0.5, low_open=True),
  'data.num_shards': NON_NEGATIVE_INT,
  'data.prefetch': NON_NEGATIVE_INT,
  'data.train_per_label': NON_NEGATIVE_INT,
  'objective.inner_steps': COUNT,
  'objective.graph_layers': COUNT,
  'objective.graph_window': NON_NEGATIVE_INT,
  'objective.inner_lr': POSITIVE,
  'objective.max_triples': COUNT,
  'objective.mrc_match_weight': NON_NEGATIVE,
  'objective.mrc_positive_weight': NON_NEGATIVE,
  'objective.ke_weight': NON_NEGATIVE,
  'objective.ke_margin': NON_NEGATIVE,
  'objective.ke_length': _at_least(3),  # [CLS], a token, [SEP].
  'data.episodes.ways': NON_NEGATIVE_INT,
  'data.episodes.shots': COUNT,
  'data.episodes.queries': COUNT,
  'data.episodes.train_count': COUNT,
  'data.episodes.eval_count': COUNT,
  'data.episodes.seed': NON_NEGATIVE_INT,
  'data.subset_seed': NON_NEGATIVE_INT,  # numpy's default_rng takes no negative seed.
  'data.vocab_size': COUNT,
  'data.tokenizer_train_docs': COUNT,
  'optimizer.learning_rate': NON_NEGATIVE,
  'optimizer.warmup_steps': NON_NEGATIVE_INT,
  'optimizer.b1': DECAY,
  'optimizer.b2': DECAY,
  'optimizer.eps': NON_NEGATIVE,
  'optimizer.weight_decay': NON_NEGATIVE,
  'optimizer.momentum': DECAY,
  'optimizer.adafactor_min_dim_to_factor': NON_NEGATIVE_INT,
  'optimizer.adafactor_momentum': DECAY,
  'optimizer.adafactor_clipping': NON_NEGATIVE,
  'optimizer.clip_norm': NON_NEGATIVE,
  'optimizer.train_top_layers': NON_NEGATIVE_INT,
  'optimizer.layer_decay': Range(0.0, 1.0, low_open=True),
  'optimizer.unfreeze_every': NON_NEGATIVE_INT,
  'optimizer.recadam_gamma': NON_NEGATIVE,
  'optimizer.recadam_k': NON_NEGATIVE,
  'optimizer.recadam_t0': NON_NEGATIVE,
  'optimizer.ewc_lambda': NON_NEGATIVE,
  'mesh.data': MESH_AXIS,
  'mesh.fsdp': MESH_AXIS,
  'mesh.sequence': MESH_AXIS,
  'mesh.tensor': MESH_AXIS,
  'objective.generator_fraction': Range(0.0, 1.0, low_open=True),
  'objective.num_predict_fraction': _at_least(2),  # K: predict 1/K of each piece, a count.
  'objective.mean_noise_span_length': _at_least(1.0),
  'objective.poisson_lambda': POSITIVE,
  'objective.temperature': POSITIVE,
  'objective.rtd_weight': NON_NEGATIVE,
  'objective.dupe_factor': NON_NEGATIVE_INT,
  'objective.max_predictions_per_seq': _at_least(0, also=(-1,)),  # -1: every position.
  'objective.num_sentinels': NON_NEGATIVE_INT,
  'objective.window': COUNT,
  'objective.negatives': COUNT,
  'objective.subsample': NON_NEGATIVE,
  'objective.noise_power': NON_NEGATIVE,
  'objective.noise_density': FRACTION,
  'objective.num_chunks': COUNT,
  'objective.max_pairs': COUNT,
  'objective.doc_stride': COUNT,
  'objective.max_query_length': COUNT,
  'objective.n_best_size': COUNT,
  'objective.max_answer_length': COUNT,
  'objective.num_labels': COUNT,
  'objective.span_geometric_p': Range(0.0, 1.0, low_open=True),
  'objective.span_max_words': COUNT,
  'objective.max_unit_words': COUNT,
  'objective.num_neighbours': COUNT,
  'objective.embeddings_max_words': COUNT,
  'objective.ernie_level_weights': NON_NEGATIVE,
  'objective.version': Range(1, 2, integer=True),  # SQuAD v1.1 or v2.0.
  'quant.bits': Range(0, 8, integer=True),  # 0: off; QAT fake-quantizes to 2..8 bits.
  'prune.sparsity': Range(0.0, 1.0, high_open=True),
  'prune.begin_step': NON_NEGATIVE_INT,
  'prune.end_step': NON_NEGATIVE_INT,
  'prune.frequency': COUNT,
  'curriculum.steps': NON_NEGATIVE_INT,
  'curriculum.initial': Range(0.0, 1.0, low_open=True),
  'curriculum.stages': COUNT,
  'length_warmup.steps': NON_NEGATIVE_INT,
  'length_warmup.start': COUNT,
  'length_warmup.multiple': COUNT,
  'adversarial.epsilon': POSITIVE,
  'adversarial.step_size': POSITIVE,
  'adversarial.steps': COUNT,
  'adversarial.weight': NON_NEGATIVE,
  'adversarial.init_std': NON_NEGATIVE,
  'probe.train_examples': NON_NEGATIVE_INT,  # 0: every example.
  'probe.eval_examples': NON_NEGATIVE_INT,
  'probe.steps': COUNT,
  'probe.train_batch': NON_NEGATIVE_INT,  # 0: full batch.
  'probe.learning_rate': POSITIVE,
  'probe.weight_decay': NON_NEGATIVE,
  'probe.mlp_dim': COUNT,
  'probe.batch_size': COUNT,
  'probe.seed': NON_NEGATIVE_INT,
  'objective.distill.temperature': POSITIVE,
  'objective.distill.hard_weight': NON_NEGATIVE,
  'objective.distill.soft_weight': NON_NEGATIVE,
  'objective.distill.hidden_weight': NON_NEGATIVE,
  'objective.distill.relation_heads': NON_NEGATIVE_INT,
}


def choices() -> dict[str, tuple]:
  """Enumerated string keys -> their allowed values, from the modules that read them."""
  return {
    'model.preset': tuple(presets.names()),
    'prng_impl': state.PRNG_IMPLS,
    'model.dtype': tuple(model_config.DTYPES),
    'model.param_dtype': tuple(model_config.DTYPES),
    'model.attention_impl': attention.IMPLEMENTATIONS,
    'data.source': sources.SOURCES,
    'data.on_decode_error': text_decoding.MODES,
    'optimizer.name': optimizers.OPTIMIZERS,
    'optimizer.schedule': optimizers.SCHEDULES,
    'mesh.strategy': tuple(partitioning.RULES),
    'on_save_error': checkpointing.ON_SAVE_ERROR,
    'objective.ernie_stage': ernie.STAGES,
    'objective.pair_kind': sentence_pairs.KINDS,
    'curriculum.schedule': curriculum.SCHEDULES,
    'objective.pooling': episodes.POOLINGS,
    'objective.qa_metric': span_qa.QA_METRICS,
    'objective.graph_kind': graph.KINDS,
    'adversarial.method': adversarial.METHODS,
    'adversarial.norm': adversarial.NORMS,
    'prune.schedule': pruning.SCHEDULES,
    'prune.scope': pruning.SCOPES,
    'objective.distill.method': distill.METHODS,
    'objective.distill.tinybert_stage': distill.TINYBERT_STAGES,
    'objective.distill.pkd_strategy': distill.PKD_STRATEGIES,
  }


def range_for(key: str) -> Range | None:
  """The range of dotted `key`: its own entry, else [0, 1] for a fraction's name."""
  if key in RANGES:
    return RANGES[key]
  if key.endswith(FRACTION_SUFFIXES):
    return FRACTION
  return None


def _leaves(config, prefix: str = ''):
  """(dotted key, value) of every leaf; reference.scores is a value (a dict of figures)."""
  for key in config.keys():
    value = config[key]
    if hasattr(value, 'keys') and f'{prefix}{key}' != 'reference.scores':
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _value_errors(config) -> dict[str, str]:
  """Bad key -> its error."""
  allowed_values = choices()
  errors = {}
  for key, value in _leaves(config):
    if key in allowed_values:
      if value not in allowed_values[key]:
        errors[key] = f'{key}={value!r}: must be one of {allowed_values[key]}'
      continue
    valid = range_for(key)
    if valid is None:
      continue
    items = value if isinstance(value, tuple | list) else (value,)
    if not all(valid.allows(item) for item in items):
      each = ' each' if isinstance(value, tuple | list) else ''
      errors[key] = f'{key}={value!r}: must{each} be {valid.describe()}'
  return errors


def _relation_errors(config, bad_keys: set[str]) -> list[str]:
  """Errors of relations between keys whose own values are valid (not in `bad_keys`)."""

  def valid(*keys) -> bool:
    return not bad_keys.intersection(keys)

  errors = []
  if valid('total_steps', 'num_epochs') and config.total_steps == 0 and config.num_epochs == 0:
    errors.append(
      'total_steps=0 and num_epochs=0: nothing to train; set total_steps > 0 (optimizer '
      'steps) or num_epochs > 0 (passes over the train records)'
    )
  axes = [f'mesh.{axis}' for axis in partitioning.MESH_AXES]
  remaining = [f'mesh.{axis}' for axis in partitioning.MESH_AXES if config.mesh[axis] == -1]
  if valid(*axes) and len(remaining) > 1:
    errors.append(
      f'{" and ".join(remaining)} are each -1: at most one mesh axis may be -1 (it takes '
      'the remaining devices)'
    )
  opt = config.optimizer
  steps, warmup, ratio = config.total_steps, opt.warmup_steps, opt.warmup_ratio
  if valid('total_steps', 'optimizer.warmup_steps', 'optimizer.warmup_ratio'):
    if ratio and warmup:  # As optimizers.warmup_steps: neither is silently ignored.
      errors.append(
        f'optimizer.warmup_ratio={ratio} and optimizer.warmup_steps={warmup}: set one of '
        'them (warmup_steps=0 to use the ratio, warmup_ratio=0 to use the steps)'
      )
    elif not ratio and steps > 0 and warmup > steps:
      errors.append(
        f'optimizer.warmup_steps={warmup}: must be <= total_steps={steps} (or set '
        'optimizer.warmup_ratio, which scales with total_steps)'
      )
  if (
    valid('optimizer.ewc_lambda')
    and opt.ewc_lambda > 0
    and not (opt.ewc_fisher and config.init_from)
  ):
    errors.append(
      f"optimizer.ewc_lambda={opt.ewc_lambda} needs optimizer.ewc_fisher (the earlier tasks' "
      'Fisher, tools/fisher.py) and init_from (the model after them, the point EWC holds to)'
    )
  prune_keys = [f'prune.{k}' for k in ('sparsity', 'schedule', 'scope', 'begin_step', 'end_step')]
  if valid('total_steps', 'prune.frequency', *prune_keys):
    try:
      pruning.check_config(config.prune, config.total_steps)
    except ValueError as error:
      errors.append(str(error).rstrip('.'))
  return errors


def validate(config):
  """Checks every numeric and enumerated value of `config` and a few relations.

  Args:
    config: the run's config (configs/base.py's keys).

  Raises:
    ValueError: listing every bad value, one line each: the key, the value and what
      it must be.
  """
  value_errors = _value_errors(config)
  errors = [*value_errors.values(), *_relation_errors(config, set(value_errors))]
  if errors:
    raise ValueError(
      f'{len(errors)} invalid config value(s); nothing was started:\n  ' + '\n  '.join(errors)
    )
