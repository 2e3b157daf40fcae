"""A fine-tuning test's run: the untrained model's dev scores, then train, then eval.py's."""

from training import evaluation, trainer
from training import run as run_lib
from training import state as state_lib


def train_and_evaluate(config, workdir: str) -> tuple[dict, dict]:
  """(the freshly initialized model's evaluate_task result, evaluate_checkpoint's after
  training `config` in `workdir`): the same init the trainer starts from (seed 0)."""
  run = run_lib.Run(config, workdir)
  state, shardings = state_lib.create(
    run.model, run.tx, mesh=run.mesh, rules=run.rules, seed=0, seq_len=config.seq_len
  )
  before = evaluation.evaluate_task(run, state.params, run.predict_step(shardings.params))
  trainer.train(config, workdir)
  return before, evaluation.evaluate_checkpoint(config, workdir)
