"""The frozen teacher of a distillation run (`config.teacher`, objectives/distill.py).

The teacher is a fine-tuned train.py run (the params of its best evaluation, else its
newest checkpoint) or a converted checkpoint (`python -m models.convert`). Its model is
the distillation objective's `build_teacher` at the teacher's own size; its params are
placed on the run's mesh with the shardings the logical rules give its param names (the
rules that shard the student), and enter the jitted train step as an argument of their
own: no gradient is taken with respect to them, the optimizer never sees them and the
train state (so every checkpoint of the student) does not hold them. Each checkpoint's
meta records where the teacher came from and a digest of its params
(`fingerprint`); a resumed run reloads the teacher from its path and checks that it is
the same (training/harness.check_meta), so a student never silently continues against
another teacher.
"""

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from data import tokenizers
from models.convert import mapping
from objectives import api
from training import integrity, model_setup, partitioning, pretrained
from training import state as state_lib


@dataclasses.dataclass
class Teacher:
  """A loaded teacher: what the train step takes and what checkpoints record."""

  model: nn.Module
  params: dict  # Device arrays, sharded by `shardings`.
  shardings: dict  # NamedShardings, a tree matching `params`.
  fingerprint: dict  # {'path', 'kind', 'checkpoint', 'sha256'}: recorded in every checkpoint.

  @property
  def frozen(self) -> api.Teacher:
    """What the objective's loss takes (model static, params traced)."""
    return api.Teacher(self.model, self.params)


def abstract_params(model, *, mesh, rules, seq_len: int):
  """(param shapes, NamedShardings) of `model`, from its logical names, without
  allocating anything."""

  def init(rng):
    return model.init(rng, *state_lib.init_inputs(model, seq_len))['params']

  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(init, jax.random.key(0))
    shardings = partitioning.logical_shardings(boxed, mesh, rules)
  return nn.unbox(boxed), shardings


def load(config, exp, *, mesh, rules) -> Teacher:
  """The teacher of `config.teacher`, placed on `mesh`.

  Args:
    config: the run's config (its `teacher`, `seq_len`).
    exp: the run's experiment (training/experiment.py): its objective builds the teacher's
      model from `exp.teacher_cfg`, and its tokenizer must be the teacher's.
    mesh, rules: the run's mesh and logical axis rules.

  Raises:
    ValueError: the teacher was trained with another tokenizer, or its checkpoint lacks
      a parameter of its model or holds one of another shape (each named).
  """
  described = model_setup.describe(config.teacher)
  _check_tokenizer(described, exp)
  model = exp.objective.build_teacher(exp.teacher_cfg)
  shapes, shardings = abstract_params(model, mesh=mesh, rules=rules, seq_len=config.seq_len)
  host, checkpoint = read_params(described)
  params = place(host, shapes, shardings, config.teacher)
  record, _ = integrity.state_record(params)
  fingerprint = {
    'path': described.path,
    'kind': described.kind,
    'checkpoint': checkpoint,
    'sha256': integrity.json_digest(record),
  }
  return Teacher(model=model, params=params, shardings=shardings, fingerprint=fingerprint)


def read_params(described: model_setup.Pretrained) -> tuple[dict, str]:
  """(the teacher's params as NumPy arrays, which checkpoint they are): a run's best
  evaluation's (else its newest checkpoint's), or a converted checkpoint's."""
  if described.kind == 'run':
    params, step, kind = pretrained.best_or_latest_params(described.path)
    return params, f'{kind} checkpoint, step {step}'
  return pretrained.load_params(described), 'converted'


def place(host: dict, shapes, shardings, where: str):
  """Every leaf of `shapes` from `host` (NumPy arrays by path), cast and sharded.

  Raises:
    ValueError: a leaf of the model is missing from `host` or has another shape.
  """
  source = mapping.flatten(host)
  missing, wrong = [], []

  def take(path, shape, sharding):
    name = integrity.leaf_name(path)
    if name not in source:
      missing.append(name)
      return None
    value = source[name]
    if tuple(value.shape) != tuple(shape.shape):
      wrong.append(f'{name} {tuple(value.shape)} (the model: {tuple(shape.shape)})')
      return None
    value = np.asarray(value, dtype=shape.dtype)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  params = jax.tree_util.tree_map_with_path(take, shapes, shardings)
  if missing or wrong:
    raise ValueError(
      f'teacher={where} does not hold the teacher model the objective builds: '
      + '; '.join(
        ([f'missing {integrity.first(missing)}'] if missing else [])
        + ([f'other shapes: {integrity.first(wrong)}'] if wrong else [])
      )
      + '. A task teacher is a run fine-tuned on the task (its head included).'
    )
  return params


def _check_tokenizer(described, exp):
  """Student and teacher must read the same token ids."""
  teacher_tok = tokenizers.load_tokenizer(described.tokenizer_path)
  if teacher_tok.fingerprint() != exp.tokenizer.fingerprint():
    raise ValueError(
      f'teacher={described.path} was trained with tokenizer {described.tokenizer_path}, but '
      f'this run reads {exp.tokenizer.path}: student and teacher must share the tokenizer '
      "(leave data.tokenizer_path empty to use the teacher's)."
    )


def check_fingerprint(saved: dict | None, teacher: Teacher, where: str):
  """A resumed student must continue against the teacher it started with.

  Raises:
    integrity.CheckpointMismatchError: the checkpoint recorded another teacher (or none).
  """
  now = teacher.fingerprint
  if saved is None:
    raise integrity.CheckpointMismatchError(
      f'The checkpoint in {where} was trained without a teacher; this run distills from '
      f'{now["path"]}: use a new --workdir.'
    )
  if saved['sha256'] != now['sha256']:
    raise integrity.CheckpointMismatchError(
      f'The checkpoint in {where} was distilled from teacher {saved["path"]} '
      f'({saved["checkpoint"]}, params sha256 {saved["sha256"][:12]}), but this run loads '
      f'{now["path"]} ({now["checkpoint"]}, sha256 {now["sha256"][:12]}): the teacher '
      'changed. Point config.teacher at the original, or start a new --workdir.'
    )
