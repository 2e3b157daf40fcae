"""Pretrain or fine-tune a model from a config file, evaluating as it goes.

  python train.py --config configs/quickstart.py --workdir /tmp/quickstart
  python train.py --config configs/paper/bert_base.py --workdir gs://b/run --config.batch_size=256

Any config key can be overridden with --config.key=value; an unknown key is an
error naming it. The run resumes by itself from the newest checkpoint in
--workdir. Multi-host: add --distributed (TPU pods, SLURM) or
--coordinator_address/--num_processes/--process_id.
"""

import os
import signal

from absl import app, flags
from ml_collections import config_flags

from evaluation import during_training
from training import config_checks, launch

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, tokenizer.')
_KILL_AFTER_STEP = flags.DEFINE_integer(
  'fault_kill_after_step',
  None,
  'Testing aid: SIGKILL this process right after the given step (its async checkpoint '
  'may be unfinished), to check that a restarted run resumes exactly.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def _kill_after(kill_step: int | None):
  if kill_step is None:
    return None

  def after_step(step: int):
    if step == kill_step:
      os.kill(os.getpid(), signal.SIGKILL)

  return after_step


def main(argv):
  del argv
  config_checks.validate(_CONFIG.value)  # Before anything is created in the workdir.
  launch.route_logs(_WORKDIR.value, 'train')
  launch.initialize_distributed()
  during_training.train_and_evaluate(
    _CONFIG.value, _WORKDIR.value, after_step=_kill_after(_KILL_AFTER_STEP.value)
  )


if __name__ == '__main__':
  app.run(main)
