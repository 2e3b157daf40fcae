"""Where a run starts: its newest usable checkpoint, a pretrained `init_from`, or a fresh init.

Resuming tries the checkpoint steps newest first. Each step's meta (JSON, no arrays) is
read and checked against the run first (tokenizer, vocabulary, model, schedule:
harness.check_meta), so a config that cannot use the checkpoint stops with one message
before anything is restored and the checkpoint stays where it is. A step that is
damaged (missing or unreadable files, digests that differ, NaN: CorruptCheckpointError)
is renamed `<step>.corrupt` (never deleted), one line says why, and the step before it
is tried; only when no step is usable does the run stop, listing them.
"""

import jax

from models import student
from training import fisher as fisher_lib
from training import harness as harness_lib
from training import integrity, model_setup, optimizers, pretrained
from training import state as state_lib
from training import teacher as teacher_lib


def start_state(harness: harness_lib.Harness, info, teacher: teacher_lib.Teacher | None = None):
  """The state a run starts from, and where its data loader resumes.

  Args:
    harness: the run's harness (config, model, optimizer, mesh, checkpointer).
    info: logs one line to the console (the metric writer's `info`).
    teacher: a distillation run's loaded teacher: a checkpoint must have been distilled
      from the same one (its recorded fingerprint), and a fresh student made of teacher
      layers (`objective.distill.student_layers`) is initialized from them.

  Returns:
    (state, shardings, data_state, step): `data_state` and `step` are those of the
    checkpoint resumed from, both None for a fresh start.

  Raises:
    CheckpointMismatchError (a ValueError): the newest readable checkpoint does not fit
      this run's config.
    RuntimeError: checkpoints exist but none is usable.
  """
  cfg, exp, checkpointer = harness.config, harness.exp, harness.checkpointer
  steps = checkpointer.all_steps()
  if not steps:
    _check_nothing_moved_aside(checkpointer)
    state, shardings = state_lib.create(
      harness.model,
      harness.tx,
      mesh=harness.mesh,
      rules=harness.rules,
      seed=cfg.seed,
      seq_len=cfg.seq_len,
    )
    if cfg.init_from:
      state = _init_from_pretrained(state, shardings, harness, info)
    elif model_setup.student_layers(cfg):
      state = _init_from_teacher_layers(state, shardings, harness, info)
    return state, shardings, None, None
  abstract, shardings = harness.abstract_state()
  unusable = []
  for step in steps:
    where = f'{checkpointer.directory}/{step}'
    try:
      meta = checkpointer.read_meta(step)
      harness_lib.check_meta(meta, cfg, exp, where, info)
      if teacher is not None:
        teacher_lib.check_fingerprint(
          meta['teacher'] if 'teacher' in meta else None, teacher, where
        )
      state, data_state, _ = checkpointer.restore(step, abstract)
    except integrity.CorruptCheckpointError as error:
      moved = checkpointer.move_aside(step)
      info(
        f'Checkpoint step {step} is unusable, item {error.item!r}: {error.reason}; moved to '
        f'{moved}, trying the one before.'
      )
      unusable.append(f'step {step} ({error.item}: {error.reason})')
      continue
    warning = checkpointer.disk_space_warning()
    if warning:
      info(warning)
    info(f'Resumed from step {step} in {checkpointer.directory}.')
    return state, shardings, data_state, step
  raise RuntimeError(
    f'No usable checkpoint in {checkpointer.directory}: {"; ".join(unusable)}. Each was '
    'moved aside as <step>.corrupt (nothing was deleted): rename one back to resume from '
    'it, or remove them (or use a new --workdir) to start from scratch.'
  )


def _check_nothing_moved_aside(checkpointer):
  """A run whose every checkpoint was found unusable does not silently start over."""
  moved = checkpointer.moved_aside()
  if moved:
    raise RuntimeError(
      f'{checkpointer.directory} holds only checkpoints moved aside as unusable '
      f'({", ".join(moved)}): remove them (or use a new --workdir) to start this run from '
      'scratch, or rename a step back to resume from it.'
    )


def _init_from_teacher_layers(state, shardings, harness, info):
  """DistilBERT's initialization: the student's layers are the teacher's
  `objective.distill.student_layers` (renumbered), its other leaves the teacher's too."""
  cfg = harness.config
  layers = model_setup.student_layers(cfg)
  host, where = teacher_lib.read_params(model_setup.describe(cfg.teacher))
  params, report = pretrained.merge(
    state.params, student.take_layers(host, layers), shardings.params
  )
  info(
    f'Student initialized from teacher {cfg.teacher} ({where}) layers {list(layers)}: '
    f'{len(report["loaded"])} tensors; fresh: {", ".join(report["fresh"]) or "none"}.'
  )
  init_opt = jax.jit(harness.tx.init, out_shardings=shardings.opt_state)
  return state.replace(params=params, opt_state=init_opt(params))


def _with_ewc_fisher(opt_state, params, shardings, cfg, info):
  """EWC's state with the Fisher of `optimizer.ewc_fisher` (its anchor is `params`)."""
  fisher, report = fisher_lib.read(cfg.optimizer.ewc_fisher, params, shardings.params)
  info(
    f'EWC: Fisher {cfg.optimizer.ewc_fisher} on {len(report["loaded"])} tensors (0 on '
    f'{len(report["fresh"])} the file lacks), strength {cfg.optimizer.ewc_lambda:g}, '
    f'anchored at init_from.'
  )
  return optimizers.with_fisher(opt_state, fisher)


def _init_from_pretrained(state, shardings, harness, info):
  """The fresh state with the pretrained weights of `init_from` in place, and the optimizer
  state built from them (RecAdam's anchor is the pretrained point)."""
  cfg = harness.config
  loaded = pretrained.load_params(model_setup.describe(cfg.init_from))
  params, report = pretrained.merge(state.params, loaded, shardings.params)
  info(
    f'init_from {cfg.init_from}: {len(report["loaded"])} pretrained tensors loaded, '
    f'{len(report["fresh"])} initialized fresh ({", ".join(report["fresh"][:6])}'
    f'{", ..." if len(report["fresh"]) > 6 else ""}), {len(report["unused"])} left unused.'
  )
  init_opt = jax.jit(harness.tx.init, out_shardings=shardings.opt_state)
  opt_state = init_opt(params)
  if cfg.optimizer.ewc_lambda > 0:
    opt_state = _with_ewc_fisher(opt_state, params, shardings, cfg, info)
  return state.replace(params=params, opt_state=opt_state)
