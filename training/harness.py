"""The harness a run's steps execute in: mesh, rules, data shards, model, optimizer, checkpointer.

Built once from the config by the training loop (training/trainer.py) and by the
evaluation of a run (evaluation/), so both see the same model, shardings and data.
"""

import json
import math

import jax
from jax.experimental import multihost_utils

from data.loader import ShardSpec
from objectives import api
from training import (
  adversarial,
  checkpointing,
  config_checks,
  experiment,
  integrity,
  optimizers,
  partitioning,
  pruning,
)
from training import state as state_lib


def checkpoint_meta(config, exp, teacher=None) -> dict:
  """The config and tokenizer fingerprint saved with every checkpoint, and a distillation
  run's teacher fingerprint (training/teacher.py)."""
  meta = {
    'config': json.loads(config.to_json()),
    'tokenizer': {'path': exp.tokenizer.path, 'sha256': exp.tokenizer.fingerprint()},
  }
  if teacher is not None:
    meta['teacher'] = teacher.fingerprint
  return meta


def check_tokenizer(meta: dict, exp, where: str):
  """A checkpoint must be used with the tokenizer it was trained with."""
  saved = meta['tokenizer']
  if saved['sha256'] != exp.tokenizer.fingerprint():
    raise ValueError(
      f'The checkpoint in {where} was trained with tokenizer {saved["path"]} '
      f'(sha256 {saved["sha256"][:12]}), but this run loads {exp.tokenizer.path} '
      f'(sha256 {exp.tokenizer.fingerprint()[:12]}): point data.tokenizer_path at the original.'
    )


# Config keys that fix the train state's leaves and shapes: a checkpoint restores only into
# the model and optimizer it was saved from (the leaves themselves are compared next, from
# the checkpoint's integrity record, before any array is read).
STATE_KEYS = (
  'model.preset',
  'model.num_layers',
  'model.num_decoder_layers',
  'model.d_model',
  'model.num_heads',
  'model.mlp_dim',
  'model.embed_dim',
  'model.adapter_dim',
  'model.param_dtype',
  'model.scan_layers',
  'optimizer.name',
)
# Config keys of the learning-rate schedule; `total_steps` counts only where the schedule
# depends on it (a decay to the end, or a warmup sized as a fraction of the run).
SCHEDULE_KEYS = (
  'optimizer.schedule',
  'optimizer.learning_rate',
  'optimizer.warmup_steps',
  'optimizer.warmup_ratio',
  'optimizer.end_lr_fraction',
)
_ABSENT = object()  # A key that a checkpoint of an older version did not save.


def _saved_value(saved: dict, dotted: str):
  node = saved
  for part in dotted.split('.'):
    if not isinstance(node, dict) or part not in node:
      return _ABSENT
    node = node[part]
  return node


def _config_value(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def _changes(saved: dict, config, keys) -> list[str]:
  """'key=saved in the checkpoint, now' for each of `keys` whose value differs."""
  changes = []
  for key in keys:
    before, now = _saved_value(saved, key), _config_value(config, key)
    if before is not _ABSENT and before != now:
      changes.append(f'{key}={before!r} in the checkpoint, {now!r} now')
  return changes


def _schedule_depends_on_length(opt_cfg) -> bool:
  return opt_cfg.schedule in ('linear', 'cosine') or bool(opt_cfg.warmup_ratio)


def check_meta(meta: dict, config, exp, where: str, info) -> None:
  """Checks a checkpoint's meta against the run about to resume from it, before any
  array is restored: its tokenizer, its trained tokenizer's vocab_size, the keys that
  shape the state, and its learning-rate schedule.

  Args:
    meta: the checkpoint's meta item (`checkpoint_meta` of the run that saved it).
    config: this run's config.
    exp: this run's experiment (its tokenizer).
    where: the checkpoint's path, for messages.
    info: logs one line (a schedule change allowed by `allow_schedule_change`).

  Raises:
    ValueError (training.integrity.CheckpointMismatchError): one message naming each
      value in the checkpoint and in this run, and what to do.
  """
  try:
    check_tokenizer(meta, exp, where)
  except ValueError as error:
    raise integrity.CheckpointMismatchError(str(error)) from None
  saved = meta['config']
  trained_here = not config.data.tokenizer_path and not config.init_from
  vocab = _saved_value(saved, 'data.vocab_size')
  if trained_here and vocab is not _ABSENT and vocab != config.data.vocab_size:
    raise integrity.CheckpointMismatchError(
      f'The checkpoint in {where} was trained with the tokenizer this run trained with '
      f'data.vocab_size={vocab} ({exp.tokenizer.path}), but this run asks for '
      f'data.vocab_size={config.data.vocab_size}, which it would not get: resume with '
      f'data.vocab_size={vocab}, or start a new --workdir for another vocabulary.'
    )
  changed = _changes(saved, config, STATE_KEYS)
  if changed:
    raise integrity.CheckpointMismatchError(
      f'The checkpoint in {where} holds another model or optimizer than this run builds: '
      f'{"; ".join(changed)}. Resume with the values it was saved with, or start a new '
      '--workdir (init_from starts a new run from its weights).'
    )
  changed = _changes(saved, config, SCHEDULE_KEYS)
  length = _changes(saved, config, ('total_steps',))
  if length and not changed and not _schedule_depends_on_length(config.optimizer):
    info(f'{length[0]}: the {config.optimizer.schedule} schedule does not depend on it.')
    return
  changed += length
  if not changed:
    return
  if not config.allow_schedule_change:
    raise integrity.CheckpointMismatchError(
      f'The checkpoint in {where} was trained on another learning-rate schedule: '
      f'{"; ".join(changed)}. Resuming would change the learning rate of every step from '
      'here on: set allow_schedule_change=True to do so, or resume with the saved values.'
    )
  info(
    f'allow_schedule_change: resuming {where} with {"; ".join(changed)}; the learning rate '
    'follows the new schedule from here on.'
  )


def check_microbatches(batch_size: int, num_microbatches: int, mesh):
  """Each microbatch must itself split evenly over the data-parallel devices."""
  ways = math.prod(mesh.shape[a] for a in partitioning.BATCH_AXES)
  if num_microbatches < 1 or batch_size % (num_microbatches * ways):
    raise ValueError(
      f'num_microbatches={num_microbatches} must be >= 1 and split batch_size={batch_size} '
      f'into microbatches that split over the {ways} data-parallel devices: batch_size must '
      f'be a multiple of num_microbatches x {ways} = {max(num_microbatches, 1) * ways}.'
    )


def train_loss(config, objective):
  """The loss the train step differentiates: the objective's, with the adversarial loss
  of `config.adversarial` added (training/adversarial.py) when a method is set."""
  return adversarial.wrap(objective.loss_fn, config.adversarial)


def step_options(config, objective) -> dict:
  """The train step's keyword arguments beyond (model, loss_fn, tx, seed), shared by the
  trainer and the pod plans: gradient accumulation and the loss terms of `train_loss`."""
  terms = api.loss_terms(objective, config.objective)
  return {
    'num_microbatches': config.num_microbatches,
    'loss_terms': adversarial.loss_terms(terms, config.adversarial),
    'loss_spike_zscore': config.loss_spike_zscore,
    'prng_impl': config.prng_impl,
  }


class Harness:
  """Mesh, model, optimizer and jitted steps of one config, shared by train and eval."""

  def __init__(self, config, workdir: str):
    config_checks.validate(config)
    self.config, self.workdir = config, workdir
    self.mesh = partitioning.make_mesh(config.mesh)
    self.rules = partitioning.logical_rules(config.mesh.strategy)
    partitioning.check_batch(config.batch_size, self.mesh)
    partitioning.check_length(config.seq_len, self.mesh)
    check_microbatches(config.batch_size, config.num_microbatches, self.mesh)
    self.shards = ShardSpec.create(
      config.batch_size, config.data.num_shards, jax.process_index(), jax.process_count()
    )
    barrier = lambda: multihost_utils.sync_global_devices('tokenizer')  # noqa: E731
    self.exp = experiment.build(config, workdir, process_index=jax.process_index(), barrier=barrier)
    self.model = self.exp.model
    # Magnitude pruning (config.prune) wraps the optimizer: its masks live in its state.
    self.tx = pruning.wrap(
      optimizers.build(config.optimizer, config.total_steps), config.prune, config.total_steps
    )
    self.batch_sharding = partitioning.batch_sharding(self.mesh)
    self.checkpointer = checkpointing.Checkpointer(
      workdir,
      keep=config.keep_checkpoints,
      save_every=config.checkpoint_every_steps,
      on_save_error=config.on_save_error,
    )

  def abstract_state(self):
    return state_lib.abstract_state(
      self.model, self.tx, mesh=self.mesh, rules=self.rules, seq_len=self.config.seq_len
    )

  def eval_step(self, param_shardings):
    return state_lib.jit_eval_step(
      param_shardings,
      self.batch_sharding,
      mesh=self.mesh,
      rules=self.rules,
      model=self.model,
      loss_fn=self.exp.objective.loss_fn,
    )

  def predict_step(self, param_shardings):
    """A task objective's `predict_fn` jitted over the mesh (evaluation/loop.py)."""
    return state_lib.jit_eval_step(
      param_shardings,
      self.batch_sharding,
      mesh=self.mesh,
      rules=self.rules,
      step_fn=state_lib.predict_step,
      model=self.model,
      predict_fn=self.exp.objective.predict_fn,
    )
