"""A run a signal stops early is not scored as finished: during_training.train_to_completion
(the benchmarks' and tools' training call) raises RunStopped, checkpoint_eval's
trained_and_evaluated (tools/lifelong.py's and tools/self_paced.py's stages) writes no
eval.json, and the same call then resumes the run to its last step."""

import json
import os
import signal

import pytest

from configs import glue as glue_config
from evaluation import checkpoint_eval, during_training
from tests.training import finetune_runs


def test_a_stopped_run_raises_and_the_same_call_finishes_it(spm_path, tmp_path, monkeypatch):
  finetune_runs.write_sst2(tmp_path, 64, 8)
  config = finetune_runs.tiny(glue_config.get_config('sst2'), spm_path, tmp_path)
  workdir = str(tmp_path / 'run')

  def sigterm_after_step_1(step: int):
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)  # The trainer's handler: stop at the next step.

  real = during_training.train_and_evaluate
  monkeypatch.setattr(during_training, 'train_and_evaluate',
                      lambda c, w, after_step=None: real(c, w, sigterm_after_step_1))  # fmt: skip
  with pytest.raises(during_training.RunStopped, match='stopped at step 2 of 4'):
    checkpoint_eval.trained_and_evaluated(config, workdir)
  assert not os.path.exists(os.path.join(workdir, 'eval.json'))  # Not scored as done.
  monkeypatch.undo()
  result = checkpoint_eval.trained_and_evaluated(config, workdir)  # Resumes at step 2.
  assert result['step'] == 4
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f if '"loss"' in line]
  assert steps == [2, 4]  # The stop's forced log, then the resumed run's.
  assert during_training.train_to_completion(config, workdir)['step'] == 4  # Done: no step.
