"""The training loop: build, resume, step, log, evaluate, checkpoint."""

import json
import os
import shutil
import time
from collections.abc import Callable

import jax

from objectives import metrics as metrics_lib
from training import best_checkpoint, evaluation, flops, optimizers, partitioning, pretrained
from training import logging as logging_lib
from training import run as run_lib
from training import state as state_lib


def train(config, workdir: str, after_step: Callable[[int], None] | None = None) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint.

  Args:
    config: the experiment config (configs/base.py keys).
    workdir: run directory (checkpoints, metrics.jsonl, tensorboard/, tokenizer/).
    after_step: called with the step number after each step and its checkpoint
      save was started (train.py's fault injection for resume tests uses it).

  Returns:
    The last logged training figures.
  """
  run = run_lib.Run(config, workdir)
  exp, cfg = run.exp, config
  writer = logging_lib.MetricWriter(workdir, cfg.total_steps)
  loader = exp.loader('train', run.shards)
  latest = run.checkpointer.latest_step()
  if latest is None:
    state, shardings = state_lib.create(
      run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=cfg.seed, seq_len=cfg.seq_len
    )
    if cfg.get('init_from', ''):
      state = _init_from_pretrained(state, shardings, run, writer)
  else:
    abstract, shardings = run.abstract_state()
    state, data_state, meta = run.checkpointer.restore(latest, abstract)
    run_lib.check_tokenizer(meta, exp, run.checkpointer.directory)
    loader.set_state(data_state)
    writer.info(f'Resumed from step {latest} in {run.checkpointer.directory}.')
  meta = run_lib.checkpoint_meta(cfg, exp)
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
    run.batch_sharding,
    mesh=run.mesh,
    rules=run.rules,
    model=run.model,
    loss_fn=exp.objective.loss_fn,
    tx=run.tx,
    seed=cfg.seed,
  )
  task = evaluation.is_task(exp.objective)
  eval_step = (run.predict_step if task else run.eval_step)(shardings.params)
  best = best_checkpoint.BestCheckpoint(workdir) if task else None
  schedule = optimizers.learning_rate_schedule(cfg.optimizer, cfg.total_steps)
  tokens_per_step = cfg.batch_size * cfg.seq_len
  flops_per_token = flops.model_flops_per_token(run.model, exp.model_cfg, cfg.seq_len)
  peak, peak_source = cfg.peak_flops_per_device, 'configured peak_flops_per_device'
  if not peak:
    peak, peak_source = flops.measured_peak_flops(), 'measured float32 matmul peak'
  writer.info(
    f'{exp.model_cfg.num_layers} layers x {exp.model_cfg.d_model} | mesh {dict(run.mesh.shape)}'
    f' | {jax.process_count()} process(es) | MFU against {peak / 1e9:.1f} GFLOP/s per device'
    f' ({peak_source}) x {jax.device_count()} devices; {flops_per_token / 1e6:.3g} MFLOPs/token'
  )

  step = int(state.step)
  last_log, last_time, acc, logged = step, time.time(), None, {}
  while step < cfg.total_steps:
    batch = partitioning.global_batch(next(loader), run.batch_sharding)
    state, step_metrics = train_step(state, batch)
    acc = step_metrics if acc is None else metrics_lib.add(acc, step_metrics)
    step += 1
    if step % cfg.log_every_steps == 0 or step == cfg.total_steps:
      values = metrics_lib.summarize(acc)  # Blocks until the steps are done.
      seconds = (time.time() - last_time) / (step - last_log)
      values.update(
        learning_rate=float(schedule(step - 1)),
        tokens_per_sec=tokens_per_step / seconds,
        mfu=flops_per_token * tokens_per_step / seconds / (peak * jax.device_count()),
        seconds_per_step=seconds,
      )
      writer.write(step, values)
      writer.progress(step, values, seconds)
      logged, last_log, last_time, acc = values, step, time.time(), None
    if cfg.eval_every_steps and (step % cfg.eval_every_steps == 0 or step == cfg.total_steps):
      if task:
        result = evaluation.evaluate_task(run, state.params, eval_step)
        eval_values = {**result['metrics'], **result['scores']}
        if best.update(step, state.params, next(iter(result['scores'])), result):
          eval_values['best_step'] = step
      else:
        eval_values = evaluation.evaluate(run, state.params, eval_step)
      writer.write(step, eval_values, prefix='eval/')
      writer.info(f'eval at step {step}: ' + _format(eval_values))
      last_time = time.time()  # Evaluation time is not training time.
    run.checkpointer.save(step, state, loader.get_state(), meta, force=step == cfg.total_steps)
    if after_step is not None:
      after_step(step)
  run.checkpointer.close()
  if best is not None:
    best.close()
  writer.close()
  return logged


def _init_from_pretrained(state, shardings, run, writer):
  """The fresh state with the pretrained weights of `init_from` in place, and the optimizer
  state built from them (RecAdam's anchor is the pretrained point)."""
  cfg = run.config
  loaded = pretrained.load_params(pretrained.describe(cfg.init_from))
  params, report = pretrained.merge(state.params, loaded, shardings.params)
  writer.info(
    f'init_from {cfg.init_from}: {len(report["loaded"])} pretrained tensors loaded, '
    f'{len(report["fresh"])} initialized fresh ({", ".join(report["fresh"][:6])}'
    f'{", ..." if len(report["fresh"]) > 6 else ""}), {len(report["unused"])} left unused.'
  )
  init_opt = jax.jit(run.tx.init, out_shardings=shardings.opt_state)
  return state.replace(params=params, opt_state=init_opt(params))


def _format(values: dict) -> str:
  return ', '.join(
    f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in values.items()
  )
