"""Self-paced curriculum learning (Kumar et al. 2010) in rounds: the model's own loss picks
which train records come first, refreshed every round.

  python -m tools.self_paced --config configs/glue.py:sst2 --config.init_from=CKPT \\
    --config.data.glue_dir=../shared/data/glue --workdir /tmp/self_paced --rounds 3 --steps 200

Round 0 trains `--steps` steps of the config with the length curriculum (a fresh head's
losses would rank nothing); round r >= 1 scores every train record with round r-1's model
(its loss: tools/difficulty.py's scoring, written to scores_<r>.txt) and trains `--steps`
steps from that model (init_from) with those scores as curriculum.difficulty. The pace
grows as self-paced learning's threshold does: round r's competence starts at
r / rounds of the records (curriculum.initial) and reaches all of them halfway through the
round (sqrt schedule, data/curriculum.py). Writes round<r>/ (a train.py run with its
eval.json) and self_paced.md / .json with each round's dev scores. A finished round is
read back and an unfinished one resumes from its checkpoint: the same command goes on
after a kill. The optimizer state starts afresh every round (init_from loads weights).
"""

import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs import base
from data import atomic_files
from evaluation import checkpoint_eval, fine_tuned_classifier
from training import config_checks, launch, model_setup

_CONFIG = config_flags.DEFINE_config_file('config', None, 'A classification config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Rounds, scores and the report.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds (round 0: the length curriculum).')
_STEPS = flags.DEFINE_integer('steps', 200, 'Train steps per round.')
flags.mark_flags_as_required(['config', 'workdir'])


def round_config(config, r: int, rounds: int, steps: int, previous: str, scores: str):
  """Round r's config: `steps` steps from `previous` (r >= 1) with `scores` as difficulty."""
  c = config.copy_and_resolve_references()
  c.total_steps, c.num_epochs, c.evals_per_epoch = steps, 0, 0
  c.eval_every_steps = c.checkpoint_every_steps = steps
  c.curriculum.difficulty = scores if r else 'length'
  c.curriculum.schedule, c.curriculum.steps = 'sqrt', max(steps // 2, 1)
  c.curriculum.initial = max(r / rounds, config.curriculum.initial)
  return model_setup.continued_from(c, previous) if r else c  # The previous round sizes it.


def own_losses(run: str, out: str) -> str:
  """The scores file of `run`'s losses on its whole train split, written once."""
  if not os.path.exists(out):
    fine_tuned_classifier.write_train_losses(run, out, defaults=base.get_config())
  return out


def main(argv):
  del argv
  config = _CONFIG.value
  config_checks.validate(config)
  if config.objective.module != 'objectives.classification':
    raise app.UsageError('--config must be a sentence (pair) classification config.')
  launch.route_logs(_WORKDIR.value, 'self_paced')
  rounds, previous, scores, task = _ROUNDS.value, '', '', config.objective.task
  report = []
  for r in range(rounds):
    if r:
      scores = own_losses(previous, os.path.join(_WORKDIR.value, f'scores_{r}.txt'))
    run = os.path.join(_WORKDIR.value, f'round{r}')
    c = round_config(config, r, rounds, _STEPS.value, previous, scores)
    result = checkpoint_eval.trained_and_evaluated(c, run)
    report.append({'round': r, 'difficulty': c.curriculum.difficulty,
                   'initial': c.curriculum.initial, 'scores': result['scores']})  # fmt: skip
    print(f'round {r}: {task} {100 * result["scores"][task]:.2f}', flush=True)
    previous = run
  lines = ['| round | difficulty | competence at start | dev |', '|---|---|---|---|']
  for row in report:
    source = 'length' if row['difficulty'] == 'length' else f'own loss (round {row["round"] - 1})'
    lines.append(f'| {row["round"]} | {source} | {row["initial"]:.2f} | '
                 f'{100 * row["scores"][task]:.2f} |')  # fmt: skip
  out = os.path.join(_WORKDIR.value, 'self_paced')
  atomic_files.write_text(out + '.md', '\n'.join(lines) + '\n')
  atomic_files.write_json(out + '.json', {'steps': _STEPS.value, 'rounds': report})
  print('\n'.join(lines))
  print(f'Wrote {out}.md and .json; dev scores per round: '
        f'{np.round([100 * r["scores"][task] for r in report], 2).tolist()}')  # fmt: skip


if __name__ == '__main__':
  app.run(main)
