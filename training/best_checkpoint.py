"""The best parameters of a fine-tuning run by its task score, kept in `<workdir>/best`.

Fine-tuning evaluates every `eval_every_steps` and reports the checkpoint with the
best dev score (BERT's and ELECTRA's protocol picks the best of a run's
evaluations). The regular checkpoints (`checkpoints/`, for resuming) rotate; this
one directory holds only the params of the best evaluation so far, with its step,
score and metrics, and survives restarts: a resumed run reads the best score back
before it compares.
"""

import os

import orbax.checkpoint as ocp


class BestCheckpoint:
  """Saves params when the selection score improves on the best seen so far."""

  def __init__(self, workdir: str):
    self.directory = os.path.abspath(os.path.join(workdir, 'best'))
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
      item_names=('params', 'meta'),
    )

  def step(self) -> int | None:
    return self._manager.latest_step()

  def meta(self) -> dict | None:
    """{'step', 'score_name', 'score', 'metrics', 'scores'} of the best so far, or None."""
    step = self.step()
    if step is None:
      return None
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored.meta

  def update(self, step: int, params, score_name: str, values: dict) -> bool:
    """Saves `params` (synchronously) if `values['scores'][score_name]` beats the best."""
    score = float(values['scores'][score_name])
    best = self.meta()
    if best is not None and best['score_name'] == score_name and score <= best['score']:
      return False
    if best is not None and best['step'] >= step:  # A resumed run re-evaluating a step.
      return False
    meta = {
      'step': step,
      'score_name': score_name,
      'score': score,
      'scores': values['scores'],
      'metrics': values['metrics'],
    }
    self._manager.save(
      step,
      args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
      force=True,
    )
    self._manager.wait_until_finished()
    return True

  def restore_params(self, abstract_params):
    """The best params, placed as `abstract_params` (ShapeDtypeStructs with shardings) say."""
    step = self.step()
    if step is None:
      raise FileNotFoundError(f'No best checkpoint in {self.directory}.')
    restored = self._manager.restore(
      step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
    )
    return restored.params

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
