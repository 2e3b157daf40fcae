"""The training loop: build, resume, step, log, evaluate (through a hook), checkpoint.

Evaluation is not training's business: every `eval_every_steps` (and at the last step)
the loop calls the `Evaluator` it was given and logs what it returns.
evaluation/during_training.py builds the held-out or task evaluator (the latter keeps
the best checkpoint of a fine-tuning run), and its `train_and_evaluate` is what train.py
runs.
"""

import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Protocol

import jax

from models import flops
from objectives import api
from objectives.shared import metrics as metrics_lib
from training import (
  adaptation,
  guard,
  metric_writer,
  mfu,
  model_setup,
  optimizers,
  partitioning,
  preemption,
  prefetch,
  pruning,
  resume,
)
from training import harness as harness_lib
from training import state as state_lib
from training import teacher as teacher_lib


class Evaluator(Protocol):
  """Evaluates the params of a step during training; what it returns is logged as eval/."""

  def __call__(self, step: int, params) -> dict[str, float]: ...

  def close(self) -> None: ...


# Builds the evaluator of a run from its harness and the state's shardings (a TrainState
# of NamedShardings), once both exist.
EvaluatorFactory = Callable[[harness_lib.Harness, state_lib.TrainState], Evaluator]


def train(
  config,
  workdir: str,
  *,
  make_evaluator: EvaluatorFactory | None = None,
  after_step: Callable[[int], None] | None = None,
) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint.

  Args:
    config: the experiment config (configs/base.py keys).
    workdir: run directory (checkpoints, metrics.jsonl, tensorboard/, tokenizer/).
    make_evaluator: builds the evaluator called every `config.eval_every_steps` and at
      the last step; required when `eval_every_steps` is positive.
    after_step: called with the step number after each step and its checkpoint
      save was started (train.py's fault injection for resume tests uses it).

  Returns:
    The last logged training figures and `step`, the step reached: below
    `config.total_steps` when a SIGTERM or SIGINT stopped the run (its checkpoint saved).

  Raises:
    ValueError: `eval_every_steps` is positive but no evaluator is given.
  """
  cfg = config
  harness = harness_lib.Harness(config, workdir)  # Sizes num_epochs runs (experiment.py).
  if cfg.eval_every_steps and make_evaluator is None:
    raise ValueError(
      f'eval_every_steps={cfg.eval_every_steps} but no evaluator was given: run '
      'evaluation.during_training.train_and_evaluate (what train.py runs), or set '
      'eval_every_steps=0.'
    )
  exp = harness.exp
  writer = metric_writer.MetricWriter(workdir, cfg.total_steps)
  harness.checkpointer.log = writer.info  # Its notes (a failed save let go) as run lines.
  for note in exp.notes:
    writer.info(note)
  loader = exp.loader('train', harness.shards)
  teacher = None
  if cfg.teacher:
    teacher = teacher_lib.load(cfg, exp, mesh=harness.mesh, rules=harness.rules)
    writer.info(
      f'Distilling from teacher {teacher.fingerprint["path"]} ({teacher.fingerprint["checkpoint"]},'
      f' params sha256 {teacher.fingerprint["sha256"][:12]}), frozen.'
    )
  state, shardings, data_state, resumed_step = resume.start_state(harness, writer.info, teacher)
  writer.truncate_after(resumed_step or 0)  # Steps after the checkpoint are redone: logged once.
  if data_state is not None:
    loader.set_state(data_state)
  meta = harness_lib.checkpoint_meta(cfg, exp, teacher)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(meta['config'], f, indent=2)
    # Keep the run self-contained: a copy of a tokenizer loaded from elsewhere.
    kept = os.path.join(workdir, 'tokenizer', os.path.basename(exp.tokenizer.path))
    if not os.path.exists(kept):
      os.makedirs(os.path.dirname(kept), exist_ok=True)
      shutil.copyfile(exp.tokenizer.path, kept)

  train_step = state_lib.jit_train_step(
    shardings,
    harness.batch_sharding,
    mesh=harness.mesh,
    rules=harness.rules,
    model=harness.model,
    loss_fn=harness_lib.train_loss(cfg, exp.objective),
    tx=harness.tx,
    seed=cfg.seed,
    teacher_model=None if teacher is None else teacher.model,
    teacher_shardings=None if teacher is None else teacher.shardings,
    **harness_lib.step_options(cfg, exp.objective),
  )
  frozen = () if teacher is None else (teacher.params,)
  evaluator = make_evaluator(harness, shardings) if cfg.eval_every_steps else None
  schedule = optimizers.learning_rate_schedule(cfg.optimizer, cfg.total_steps)
  warmup = exp.length_warmup()
  row_length = (lambda _: cfg.seq_len) if warmup is None else warmup.length

  @functools.cache
  def flops_per_token(length: int) -> float:
    """Model FLOPs per trained token with rows of `length` tokens (the teacher's forward
    pass added: a third of its training FLOPs)."""
    own = api.flops_per_token(exp.objective, cfg.objective, harness.model, exp.model_cfg, length)
    if teacher is None:
      return own
    decoder_len = api.decoder_length(exp.objective, cfg.objective, length)
    predicted_len = api.predicted_length(exp.objective, cfg.objective, length)
    return (
      own
      + flops.model_flops_per_token(
        teacher.model, exp.teacher_cfg, length, decoder_len, predicted_len
      )
      / 3
    )

  def interval_work(first: int, end: int, sub_rows: int) -> tuple[int, float]:
    """(tokens, model FLOPs) of steps first .. end - 1, each loader row `sub_rows` encoder
    rows (a [batch, T, length] batch: NER as MRC's T queries, an episode's T records)."""
    lengths = [row_length(s) for s in range(first, end)]
    tokens = [cfg.batch_size * sub_rows * n for n in lengths]
    return sum(tokens), sum(t * flops_per_token(n) for t, n in zip(tokens, lengths, strict=True))

  peak, peak_source = cfg.peak_flops_per_device, 'configured peak_flops_per_device'
  if not peak:
    peak, peak_source = mfu.measured_peak_flops(), 'measured float32 matmul peak'
  model_name = cfg.model.preset
  if cfg.init_from:
    model_name = f'{cfg.init_from} (init_from)'
  elif layers := model_setup.student_layers(cfg):
    model_name = f'layers {list(layers)} of teacher {cfg.teacher}'
  writer.info(
    f'{model_name} trained with {cfg.objective.module} for {cfg.total_steps} steps of '
    f'{cfg.batch_size} x {cfg.seq_len} tokens in {workdir} (library logs in its logs/)'
  )
  if warmup is not None:
    writer.info(
      f'Sequence-length warm-up: rows of {warmup.length(0)} tokens at step 0, growing to '
      f'{cfg.seq_len} by step {warmup.steps} (multiples of {warmup.multiple}).'
    )
  writer.info(
    f'{exp.model_cfg.num_layers} layers x {exp.model_cfg.d_model} | mesh '
    f'{dict(harness.mesh.shape)} | {jax.process_count()} process(es) | MFU against '
    f'{peak / 1e9:.1f} GFLOP/s per device ({peak_source}) x {jax.device_count()} devices; '
    f'{flops_per_token(cfg.seq_len) / 1e6:.3g} MFLOPs/token'
  )

  trained, total = adaptation.trained_count(cfg.optimizer, state.params)
  writer.info(f'parameters: {trained:,} trained of {total:,} ({100 * trained / total:.2f}%)')

  step = int(state.step)
  # The next batches are read and put on the devices while a step runs; each comes with
  # the loader's state after it, which is what a checkpoint of that step must hold.
  to_device = functools.partial(partitioning.global_batch, sharding=harness.batch_sharding)
  batches = prefetch.Prefetcher(loader, to_device, cfg.data.prefetch)
  watch, preempted = preemption.PreemptionWatch(), False
  # Skipped updates in a row, counted from each step's flag one step late (no host wait).
  bad_steps, last_flag = guard.BadStepCounter(cfg.max_bad_steps), None
  last_log, last_time, acc, logged = step, time.time(), None, {}
  host_seconds, waited = 0.0, batches.wait_seconds
  sub_rows = None  # Encoder rows per loader row, from the first batch's shape.
  try:
    while step < cfg.total_steps:
      batch, data_state, seconds_read = next(batches)
      host_seconds += seconds_read
      if sub_rows is None:
        sub_rows = math.prod(batch['inputs'].shape[1:-1])
      state, step_metrics = train_step(state, batch, *frozen)
      if last_flag is not None:  # The previous step's (number `step`): done by now.
        bad_steps.add(last_flag, step)
      last_flag = guard.skipped_flag(step_metrics)
      acc = step_metrics if acc is None else metrics_lib.add(acc, step_metrics)
      step += 1
      preempted = watch.reached(step)
      if step % cfg.log_every_steps == 0 or step == cfg.total_steps or preempted:
        values = metrics_lib.summarize(acc)  # Blocks until the steps are done.
        check_loss_terms(values, cfg.objective.module)
        values = guard.interval_figures(values)
        steps = step - last_log
        elapsed = time.time() - last_time
        tokens, work = interval_work(last_log, step, sub_rows)
        values.update(
          learning_rate=float(schedule(step - 1)),
          tokens_per_sec=tokens / elapsed,
          mfu=work / elapsed / (peak * jax.device_count()),
          seconds_per_step=elapsed / steps,
          # What the input pipeline alone delivers, and how long steps waited for it.
          input_tokens_per_sec=tokens / max(host_seconds, 1e-9),
          input_wait_sec=(batches.wait_seconds - waited) / steps,
        )
        if warmup is not None:  # Rows' length now, and the tokens trained so far.
          values.update(row_length=row_length(step - 1),
                        tokens=warmup.tokens_before(step, cfg.batch_size))  # fmt: skip
        if cfg.prune.sparsity:  # The pruned matrices' zeros, against prune.sparsity.
          values['sparsity'] = pruning.achieved_sparsity(state.params)
        writer.write(step, values)
        writer.progress(step, values, elapsed / steps)
        logged, last_log, last_time, acc = values, step, time.time(), None
        host_seconds, waited = 0.0, batches.wait_seconds
      if evaluator is not None and (step % cfg.eval_every_steps == 0 or step == cfg.total_steps):
        eval_values = evaluator(step, state.params)
        writer.write(step, eval_values, prefix='eval/')
        writer.info(f'eval at step {step}: ' + _format(eval_values))
        last_time = time.time()  # Evaluation time is not training time.
      harness.checkpointer.save(
        step, state, data_state, meta, force=step == cfg.total_steps or preempted
      )
      if after_step is not None:
        after_step(step)
      if preempted:
        break
    if last_flag is not None:
      bad_steps.add(last_flag, step)
  finally:  # Also when a step raises: the handlers put back, the reading thread ended.
    watch.close()
    batches.close()
  harness.checkpointer.close()  # Waits for the last save.
  if preempted:
    writer.info(
      f'{watch.reason}: stopped after step {step} with its checkpoint saved in '
      f'{harness.checkpointer.directory}; the same command resumes from it.'
    )
  if evaluator is not None:
    evaluator.close()
  writer.close()
  return dict(logged, step=step)


def check_loss_terms(values: dict, module: str):
  """Gradient accumulation rebuilt the loss from the objective's `loss_terms`; it must be
  the loss the objective computes, or the accumulated gradient is another loss's."""
  error = values.pop(state_lib.LOSS_TERMS_ERROR, 0.0)
  if error > state_lib.LOSS_TERMS_TOLERANCE:
    raise ValueError(
      f'{module}: its loss is not the sum of its loss_terms (relative difference {error:.3g}'
      ') so num_microbatches > 1 would accumulate the gradient of another loss: declare '
      'loss_terms(objective_cfg) in the objective (objectives/api.py).'
    )


def _format(values: dict) -> str:
  return ', '.join(
    f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in values.items()
  )
