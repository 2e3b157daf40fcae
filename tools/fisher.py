"""The diagonal Fisher of a trained run on its own train split, for EWC
(training/fisher.py; `--config.optimizer.ewc_fisher` of the next run).

  python -m tools.fisher --run TASK_A_RUN --out /tmp/fisher_a.npz --examples 1000
  python train.py --config ... --config.init_from=TASK_A_RUN \\
    --config.optimizer.ewc_lambda=1e4 --config.optimizer.ewc_fisher=/tmp/fisher_a.npz
  python -m tools.fisher --run TASK_B_RUN --out /tmp/fisher_ab.npz --accumulate /tmp/fisher_a.npz

RUN is any train.py run (read at its best checkpoint, else its newest) whose objective
has a per-row loss (classification, MT-DNN, tagging, ...); its first `--examples` train
rows, in its training order, each give one per-example gradient. `--accumulate` adds an
earlier Fisher (online EWC over a task sequence). Prints the Fisher's mean and quantiles.
"""

import numpy as np
from absl import app, flags

from configs import base
from training import fisher as fisher_lib

_RUN = flags.DEFINE_string('run', None, 'The run whose task the Fisher measures.')
_OUT = flags.DEFINE_string('out', None, 'The .npz file to write.')
_EXAMPLES = flags.DEFINE_integer('examples', 1000, 'Train rows (per-example gradients).')
_ACCUMULATE = flags.DEFINE_string('accumulate', '', 'An earlier Fisher .npz to add.')
flags.mark_flags_as_required(['run', 'out'])


def main(argv):
  del argv
  fisher, count, source = fisher_lib.of_run(_RUN.value, _EXAMPLES.value, base.get_config())
  flat = fisher_lib.save(_OUT.value, fisher, _ACCUMULATE.value)
  values = np.concatenate([v.ravel() for v in flat.values()])
  q = np.quantile(values, [0.5, 0.9, 0.99])
  print(f'Fisher of {source.workdir} ({source.checkpoint}, step {source.step}) over {count} '
        f'examples{" + " + _ACCUMULATE.value if _ACCUMULATE.value else ""}: mean {values.mean():.3g}, '
        f'median {q[0]:.3g}, 90% {q[1]:.3g}, 99% {q[2]:.3g}; written to {_OUT.value}')  # fmt: skip


if __name__ == '__main__':
  app.run(main)
