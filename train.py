"""Pretrain (and, later, fine-tune) a model from a config file.

  python train.py --config configs/quickstart.py --workdir /tmp/quickstart
  python train.py --config configs/bert_base.py --workdir gs://b/run --config.batch_size=256

Any config key can be overridden with --config.key=value; an unknown key is an
error naming it. The run resumes by itself from the newest checkpoint in
--workdir. Multi-host: add --distributed (TPU pods, SLURM) or
--coordinator_address/--num_processes/--process_id.
"""

from absl import app, flags
from ml_collections import config_flags

from training import launch

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, logs, tokenizer.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  launch.initialize_distributed()
  from training import trainer  # After distributed init: importing may touch devices.

  trainer.train(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
