"""The objective contract: what training, evaluation and the tools may call on an objective.

An objective is a module (objectives/mlm.py) or, when it needs its config to assemble
itself (a combination of objectives, a task's label set), the object its
`configure(objective_cfg)` returns. `load` imports it by module path, configures it and
checks it against the protocols below, naming what is missing. Callers reach the
optional hooks only through the functions at the end of this module, so that what an
objective may leave out, and what that means, is said once.

Required of every objective (`Objective`):
  FRAMING                 (prefix id name, suffix id name) of a packed segment, e.g.
                          ('cls_id', 'sep_id') for BERT, ('bos_id', 'eos_id') for GPT.
  SHOW                    how `python -m tools.show` renders a row ('masked', 'causal', ...).
  build_model(model_cfg)  the Flax module it trains.
  make_preprocess(objective_cfg, tokenizer, seed) -> preprocess(rows) -> batch
                          host-side, vectorized NumPy over the batch; randomness derived
                          from (seed, epoch, example id).
  loss_fn(params, batch, rng, *, model) -> (loss, metrics)
                          jitted; metrics are (sum, weight) pairs.
  eval_summary(values) -> values
                          figures derived from the averaged eval metrics (perplexity).

Required of a fine-tuning task (`TaskObjective`, on top of the above):
  make_rows(objective_cfg, stream, docs, tokenizer, *, seq_len, seed, shard, num_shards)
                          one row (or several) per task record instead of packing.
  predict_fn(params, batch, *, model) -> {name: [batch, ...]}
                          jitted per-row outputs.
  decode_predictions(objective_cfg, outputs, records) -> dict
                          host-side: the rows' outputs of a whole split turned into
                          per-example predictions, in the form of the scorer named by its
                          'metric' entry (evaluation/task_metrics.py scores them).

Required of an auxiliary part of a combination (`AuxiliaryPart`, objectives/multitask.py):
  AUX_HEAD, make_aux_preprocess(objective_cfg, tokenizer, seed), aux_loss(out, batch, cfg).

Optional (defaults in brackets):
  config()                the objective's section of `config.objective`: its keys with
                          their defaults, merged by configs/base.py [no keys of its own].
  configure(objective_cfg)   returns the object that provides the API [the module].
  packed_length(objective_cfg, seq_len)   tokens per packed row before preprocessing,
                          when the objective changes lengths (T5) [seq_len].
  decoder_length(objective_cfg, seq_len)  decoder tokens per row of an encoder-decoder,
                          for the FLOP count [seq_len].
  make_rows               also allowed on a pretraining objective (NSP sentence pairs)
                          [the loader packs documents].
  show_names(objective_cfg, tokenizer, seq_len) -> {id: name}   pieces in a role of their
                          own, named by tools.show (T5's sentinels) [none].
  labels                  a tagging objective's tag names, in id order [none].
  predicted_length(objective_cfg, seq_len)   positions per row projected onto the
                          vocabulary, for the FLOP count (MLM's gathered masked
                          positions) [seq_len].
  build_teacher(teacher_cfg), build_student(model_cfg, teacher_cfg)
                          a distillation objective (objectives/distill.py): the frozen
                          teacher's model and the student's model sized against it. With
                          a teacher (`config.teacher`), the train step calls
                          `loss_fn(params, batch, rng, *, model, teacher=Teacher(...))`
                          [no teacher].
  loss_terms(objective_cfg) -> {metric name: coefficient}
                          the optimized loss as sum of coefficient x (sum / weight) of
                          these (sum, weight) metrics, which gradient accumulation
                          (training/state.py) normalizes by the whole batch's weights
                          [{'loss': 1.0}: the loss is the `loss` metric's mean].
"""

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from models import flops


@runtime_checkable
class Objective(Protocol):
  """A pretraining objective (and the base of every objective)."""

  FRAMING: tuple[str, str]
  SHOW: str

  def build_model(self, model_cfg) -> Any: ...

  def make_preprocess(self, objective_cfg, tokenizer, seed: int) -> Callable[[dict], dict]: ...

  def loss_fn(self, params, batch: dict, rng, *, model) -> tuple[Any, dict]: ...

  def eval_summary(self, values: dict[str, float]) -> dict[str, float]: ...


@runtime_checkable
class TaskObjective(Objective, Protocol):
  """A fine-tuning objective: rows per task record, predictions scored over a split."""

  def make_rows(self, objective_cfg, stream, docs, tokenizer, **kwargs) -> Any: ...

  def predict_fn(self, params, batch: dict, *, model) -> dict: ...

  def decode_predictions(self, objective_cfg, outputs: dict, records) -> dict: ...


@runtime_checkable
class AuxiliaryPart(Protocol):
  """A part of a combination that adds a head and a loss on the trunk's final states."""

  AUX_HEAD: str

  def make_aux_preprocess(self, objective_cfg, tokenizer, seed: int) -> Callable: ...

  def aux_loss(self, output, batch: dict, objective_cfg) -> tuple[Any, dict]: ...


class Teacher(NamedTuple):
  """A distillation teacher inside the jitted loss: its model (static) and its frozen
  params (traced arrays, sharded like the student's; training/teacher.py)."""

  model: Any
  params: Any


def members(protocol: type) -> tuple[str, ...]:
  """The names a protocol requires, its bases' included, in declaration order."""
  names = []
  for cls in reversed(protocol.__mro__):
    if cls in (Protocol, object) or not getattr(cls, '_is_protocol', False):
      continue
    declared = [*getattr(cls, '__annotations__', {}), *vars(cls)]
    names += [n for n in declared if not n.startswith('_') and n not in names]
  return tuple(names)


def missing(objective, protocol: type) -> list[str]:
  """The names of `protocol` that `objective` lacks."""
  return [name for name in members(protocol) if not hasattr(objective, name)]


def import_module(module_path: str, what: str = 'objective.module'):
  try:
    return importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    raise ValueError(
      f'{what}={module_path!r} cannot be imported ({e}); expected a module path such '
      "as 'objectives.mlm' or 'objectives.clm'."
    ) from e


def load(module_path: str, objective_cfg):
  """The objective named by `config.objective.module`, configured and checked.

  Args:
    module_path: e.g. 'objectives.mlm'.
    objective_cfg: the config's `objective` section (its `configure` reads it).

  Returns:
    The module, or what its `configure(objective_cfg)` returned.

  Raises:
    ValueError: the module cannot be imported, or lacks what `Objective` requires (or,
      having `predict_fn`, what `TaskObjective` requires); the message names each
      missing function.
  """
  module = import_module(module_path)
  objective = module.configure(objective_cfg) if hasattr(module, 'configure') else module
  protocol = TaskObjective if hasattr(objective, 'predict_fn') else Objective
  absent = missing(objective, protocol)
  if absent:
    raise ValueError(
      f'Objective module {module_path!r} lacks {", ".join(absent)} (required of '
      f'{"a task objective" if protocol is TaskObjective else "every objective"}: '
      f'{", ".join(members(protocol))}; see objectives/api.py).'
    )
  return objective


def load_part(module_path: str):
  """An auxiliary part of a combination (objectives/multitask.py), checked."""
  module = import_module(module_path, 'objective.parts item')
  absent = missing(module, AuxiliaryPart)
  if absent:
    raise ValueError(
      f'objective.parts item {module_path!r} is not an auxiliary objective: it lacks '
      f'{", ".join(absent)} (see objectives/api.py, AuxiliaryPart).'
    )
  return module


# ---------------------------------------------------------------------------------------------
# The optional hooks, with their defaults.
# ---------------------------------------------------------------------------------------------


def is_task(objective) -> bool:
  """A fine-tuning task: scored by predictions over a whole split (F1, MCC, ...)."""
  return isinstance(objective, TaskObjective)


def packed_length(objective, objective_cfg, seq_len: int) -> int:
  """Tokens per packed row before preprocessing: `seq_len` unless the objective changes
  lengths (T5 packs longer rows so that its corrupted inputs fill `seq_len` exactly)."""
  hook = getattr(objective, 'packed_length', None)
  return seq_len if hook is None else hook(objective_cfg, seq_len)


def decoder_length(objective, objective_cfg, seq_len: int) -> int:
  """Decoder tokens per row of an encoder-decoder: `seq_len` unless the objective's
  targets are shorter (T5's span corruption predicts only the noise)."""
  hook = getattr(objective, 'decoder_length', None)
  return seq_len if hook is None else hook(objective_cfg, seq_len)


def predicted_length(objective, objective_cfg, seq_len: int) -> int:
  """Positions per row projected onto the vocabulary: `seq_len` unless the objective
  gathers the ones it predicts first (MLM's masked positions, objectives/mlm.py)."""
  hook = getattr(objective, 'predicted_length', None)
  return seq_len if hook is None else hook(objective_cfg, seq_len)


def passes_per_row(objective, objective_cfg) -> float:
  """Forward + backward passes a train step runs over each row, a forward alone counting
  1/3 (FOMAML's and Reptile's inner loops: several); 1 for most. The FLOP count
  multiplies the row's work by it (models/flops.model_flops_per_token)."""
  hook = getattr(objective, 'passes_per_row', None)
  return 1.0 if hook is None else float(hook(objective_cfg))


def side_passes(objective, objective_cfg, seq_len: int) -> tuple[tuple[int, int], ...]:
  """The encoder passes an objective runs per training row besides the row's own, as
  (rows, tokens each) pairs, headless (KEPLER's three description rows of ke_length
  tokens); () for most. The FLOP count adds them (models/flops.model_flops_per_token)."""
  hook = getattr(objective, 'side_passes', None)
  return () if hook is None else tuple(hook(objective_cfg, seq_len))


def flops_per_token(objective, objective_cfg, model, model_cfg, seq_len: int) -> float:
  """Training FLOPs per token of `model` on this objective's rows of `seq_len` tokens:
  models/flops.model_flops_per_token with the decoder length, gathered positions, side
  passes and passes per row the objective declares. The trainer's MFU, the pod plans and
  the throughput benchmark all count through here."""
  return flops.model_flops_per_token(
    model,
    model_cfg,
    seq_len,
    decoder_length(objective, objective_cfg, seq_len),
    predicted_length(objective, objective_cfg, seq_len),
    side_passes(objective, objective_cfg, seq_len),
    passes_per_row(objective, objective_cfg),
  )


def row_builder(objective) -> Callable | None:
  """The objective's own `make_rows`, or None when the loader packs documents."""
  return getattr(objective, 'make_rows', None)


def show_names(objective, objective_cfg, tokenizer, seq_len: int) -> dict[int, str]:
  """{id: name} of pieces the objective uses in a role of their own (T5's sentinels)."""
  hook = getattr(objective, 'show_names', None)
  return {} if hook is None else hook(objective_cfg, tokenizer, seq_len)


def tag_names(objective) -> tuple[str, ...] | None:
  """A tagging objective's tag names in id order, or None."""
  return getattr(objective, 'labels', None)


def distills(objective) -> bool:
  """Whether the objective trains against a frozen teacher (it builds one)."""
  return hasattr(objective, 'build_teacher')


def student_model(objective, model_cfg, teacher_cfg):
  """The model a run trains: the objective's `build_student` against its teacher's
  config when it has both, else `build_model`."""
  if teacher_cfg is not None and hasattr(objective, 'build_student'):
    return objective.build_student(model_cfg, teacher_cfg)
  return objective.build_model(model_cfg)


def loss_terms(objective, objective_cfg) -> dict[str, float]:
  """{metric name: coefficient}: the loss is sum of coefficient x sum / weight of these
  (sum, weight) metrics. Gradient accumulation needs it to normalize each microbatch
  by the whole batch's weights (a mean of microbatch means is another loss)."""
  hook = getattr(objective, 'loss_terms', None)
  return {'loss': 1.0} if hook is None else dict(hook(objective_cfg))
