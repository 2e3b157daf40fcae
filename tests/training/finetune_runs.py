"""A fine-tuning test's run: the untrained model's dev scores, then train, then eval.py's."""

from evaluation import checkpoint_eval, during_training, loop
from training import harness as harness_lib
from training import state as state_lib


def train_and_evaluate(config, workdir: str) -> tuple[dict, dict]:
  """(the freshly initialized model's evaluate_task result, evaluate_checkpoint's after
  training `config` in `workdir`): the same init the trainer starts from (seed 0)."""
  run = harness_lib.Harness(config, workdir)
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  before = loop.evaluate_task(run, state.params, run.predict_step(shardings.params))
  during_training.train_and_evaluate(config, workdir)
  return before, checkpoint_eval.evaluate_checkpoint(config, workdir)
