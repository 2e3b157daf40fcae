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
from training import checkpointing, experiment, optimizers, partitioning
from training import state as state_lib


def checkpoint_meta(config, exp) -> dict:
  """The config and tokenizer fingerprint saved with every checkpoint."""
  return {
    'config': json.loads(config.to_json()),
    'tokenizer': {'path': exp.tokenizer.path, 'sha256': exp.tokenizer.fingerprint()},
  }


def check_tokenizer(meta: dict, exp, where: str):
  """A checkpoint must be used with the tokenizer it was trained with."""
  saved = meta['tokenizer']
  if saved['sha256'] != exp.tokenizer.fingerprint():
    raise ValueError(
      f'The checkpoint in {where} was trained with tokenizer {saved["path"]} '
      f'(sha256 {saved["sha256"][:12]}), but this run loads {exp.tokenizer.path} '
      f'(sha256 {exp.tokenizer.fingerprint()[:12]}): point data.tokenizer_path at the original.'
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


def step_options(config, objective) -> dict:
  """The train step's keyword arguments beyond (model, loss_fn, tx, seed), shared by the
  trainer and the pod plans: gradient accumulation and the objective's loss terms."""
  return {
    'num_microbatches': config.num_microbatches,
    'loss_terms': api.loss_terms(objective, config.objective),
  }


class Harness:
  """Mesh, model, optimizer and jitted steps of one config, shared by train and eval."""

  def __init__(self, config, workdir: str):
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
    self.tx = optimizers.build(config.optimizer, config.total_steps)
    self.batch_sharding = partitioning.batch_sharding(self.mesh)
    self.checkpointer = checkpointing.Checkpointer(
      workdir, keep=config.keep_checkpoints, save_every=config.checkpoint_every_steps
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
