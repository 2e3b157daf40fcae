"""Where a run starts: its newest checkpoint, a pretrained `init_from`, or a fresh init."""

import jax

from training import harness as harness_lib
from training import model_setup, pretrained
from training import state as state_lib


def start_state(harness: harness_lib.Harness, info):
  """The state a run starts from, and where its data loader resumes.

  Args:
    harness: the run's harness (config, model, optimizer, mesh, checkpointer).
    info: logs one line to the console (the metric writer's `info`).

  Returns:
    (state, shardings, data_state, step): `data_state` and `step` are those of the
    checkpoint resumed from, both None for a fresh start.
  """
  cfg, exp = harness.config, harness.exp
  latest = harness.checkpointer.latest_step()
  if latest is None:
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
    return state, shardings, None, None
  abstract, shardings = harness.abstract_state()
  state, data_state, meta = harness.checkpointer.restore(latest, abstract)
  harness_lib.check_tokenizer(meta, exp, harness.checkpointer.directory)
  info(f'Resumed from step {latest} in {harness.checkpointer.directory}.')
  return state, shardings, data_state, latest


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
  return state.replace(params=params, opt_state=init_opt(params))
