"""Difficulty scores for curriculum learning from a reference classifier: its loss on each
train record, written as the file `--config.curriculum.difficulty` reads.

  python -m tools.difficulty --run REFERENCE_RUN --out /tmp/sst2_difficulty.txt
  python train.py --config configs/glue.py:sst2 --workdir /tmp/sst2_curriculum \\
    --config.init_from=CKPT --config.data.glue_dir=... \\
    --config.curriculum.difficulty=/tmp/sst2_difficulty.txt

REFERENCE_RUN is a train.py fine-tuning run of a sentence (pair) classification task (read
at its best checkpoint, else its newest). Each record of its train split, in file order,
gets the cross-entropy of its gold label under the run's model (a regression run: the
squared error), one number per line, higher is harder (Hacohen & Weinshall 2019's
transfer scoring; Platanios et al. 2019 score by length or word rarity instead). The
curriculum run must read the same train split (same task and files, no
data.train_records or train_per_label subset): the scores are matched by position, and a
count that differs is an error there. The whole train split is scored, also when the
reference run trained on a subset of it (a held-out view of the rest). Written atomically.
"""

import numpy as np
from absl import app, flags

from configs import base
from evaluation import fine_tuned_classifier

_RUN = flags.DEFINE_string('run', None, 'The reference classifier (a train.py workdir).')
_OUT = flags.DEFINE_string('out', None, 'The scores file to write.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Rows per forward pass.')
flags.mark_flags_as_required(['run', 'out'])


def main(argv):
  del argv
  try:
    scores = fine_tuned_classifier.write_train_losses(
      _RUN.value, _OUT.value, _BATCH.value, base.get_config()
    )
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  q = np.quantile(scores, [0.1, 0.5, 0.9])
  print(f'{len(scores)} scores (loss quantiles 10/50/90%: {q[0]:.4f} {q[1]:.4f} {q[2]:.4f}) '
        f'written to {_OUT.value}')  # fmt: skip


if __name__ == '__main__':
  app.run(main)
