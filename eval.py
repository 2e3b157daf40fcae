"""Evaluate the newest checkpoint of a run on its held-out split.

  python eval.py --config configs/quickstart.py --workdir /tmp/quickstart

Prints a table and writes <workdir>/eval.json (MLM: loss, accuracy and
perplexity over masked tokens; CLM: loss, accuracy and perplexity).
"""

from absl import app, flags
from ml_collections import config_flags

from training import launch

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory holding checkpoints/.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  launch.initialize_distributed()
  from training import evaluation  # After distributed init.

  evaluation.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
