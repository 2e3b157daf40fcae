"""Lifelong learning over a sequence of GLUE tasks: fine-tune on one task after the other,
score every task after each, and compare ways of not forgetting.

  python -m tools.lifelong --config configs/mtdnn.py:sst2,rte,mrpc \\
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue \\
    --workdir /tmp/lifelong --steps 150 --methods naive,rehearsal,ewc,recadam

The model is MT-DNN's (objectives/mtdnn.py): one encoder, one head per task of the
sequence (the order of the config's task list). Stage j trains `--steps` steps on task j's
train records only (`data.train_records`), starting from stage j-1's run (stage 0 from
`init_from`), and is then scored on every task's dev split; stage 0 is one run shared by
all methods. Methods, from stage 1 on:
  naive      nothing against forgetting;
  rehearsal  each earlier task's `--replay` train records (drawn once, by --seed) are
             mixed into the stage's records: experience replay;
  ewc        the encoder is pulled toward the previous stage's weights, weighted by the
             earlier tasks' diagonal Fisher, summed over them (online EWC, training/fisher.py
             with `--fisher_examples` per task; strength `--ewc_lambda`);
  recadam    RecAdam's annealed pull toward the previous stage's weights
             (`optimizer.recadam_gamma` 5000, k 0.5, t0 = steps / 2; training/optimizers.py).
Writes in --workdir: stage0/ and <method>/stage<j>/ (labelled.txt: the train positions,
run/: the train.py run with eval.json), <method>/fisher_<j>.npz, and lifelong.md / .json:
each method's score matrix (after stage j, on task i), average final score, forgetting
and backward transfer (evaluation/lifelong.py). A finished stage is read back, an
unfinished one resumes from its checkpoint: the same command goes on after a kill.
"""

import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs import base
from data import atomic_files, tasks
from evaluation import checkpoint_eval, lifelong
from training import config_checks, launch, model_setup
from training import fisher as fisher_lib

METHODS = ('naive', 'rehearsal', 'ewc', 'recadam')

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/mtdnn.py:<task,task,...>.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Stages, runs and the report.')
_STEPS = flags.DEFINE_integer('steps', 150, 'Train steps per stage (task).')
_METHODS = flags.DEFINE_list('methods', list(METHODS), 'Methods to compare.')
_REPLAY = flags.DEFINE_integer('replay', 100, 'rehearsal: train records kept per earlier task.')
_EWC = flags.DEFINE_float('ewc_lambda', 1e4, 'ewc: penalty strength.')
_FISHER = flags.DEFINE_integer('fisher_examples', 200, 'ewc: examples per task for the Fisher.')
_SEED = flags.DEFINE_integer('seed', 0, 'Replay draws and training seed.')
flags.mark_flags_as_required(['config', 'workdir'])


def stage_config(config, j: int, method: str, previous: str, labelled: str, fisher: str):
  c = config.copy_and_resolve_references()
  c.total_steps, c.num_epochs, c.evals_per_epoch = _STEPS.value, 0, 0
  c.eval_every_steps = c.checkpoint_every_steps = _STEPS.value
  c.data.train_records = labelled
  c.seed = _SEED.value
  if j > 0:  # The previous stage sizes the model (sizes given for stage 0 are its).
    c = model_setup.continued_from(c, previous)
  if j > 0 and method == 'ewc':
    c.optimizer.ewc_lambda, c.optimizer.ewc_fisher = _EWC.value, fisher
  if j > 0 and method == 'recadam':
    c.optimizer.recadam_gamma, c.optimizer.recadam_k = 5000.0, 0.5
    c.optimizer.recadam_t0 = _STEPS.value / 2
  return c


def run_stage(config, stage_dir: str) -> dict:
  """Trains (or resumes, or reads back) one stage; returns its eval.json scores."""
  return checkpoint_eval.trained_and_evaluated(config, os.path.join(stage_dir, 'run'))['scores']


def positions_file(stage_dir: str, positions) -> str:
  path = os.path.join(stage_dir, 'labelled.txt')
  if not os.path.exists(path):
    tasks.write_positions(path, sorted(int(p) for p in positions), f'{len(positions)} records')
  return path


def stage_positions(method: str, j: int, by_task: list, replay: list) -> np.ndarray:
  """The train positions of stage j: task j's records, plus (rehearsal) the replayed
  records of the tasks before it."""
  if method == 'rehearsal':
    return np.concatenate([by_task[j], *replay[:j]])
  return by_task[j]


def run_method(config, method: str, by_task: list[np.ndarray], shared: dict) -> list[dict]:
  names = config.objective.tasks.split(',')
  rng = np.random.default_rng(_SEED.value)
  replay = [rng.choice(p, size=min(_REPLAY.value, len(p)), replace=False) for p in by_task]
  scores, previous = [shared['scores']], shared['run']
  fisher = ''
  for j in range(1, len(names)):
    method_dir = os.path.join(_WORKDIR.value, method)
    if method == 'ewc':  # The earlier tasks' Fisher, task j-1's added to the sum.
      path = os.path.join(method_dir, f'fisher_{j - 1}.npz')
      if not os.path.exists(path):
        tree, _, _ = fisher_lib.of_run(previous, _FISHER.value, base.get_config())
        fisher_lib.save(path, tree, accumulate=fisher)
      fisher = path
    positions = stage_positions(method, j, by_task, replay)
    stage_dir = os.path.join(method_dir, f'stage{j}')
    labelled = positions_file(stage_dir, positions)
    c = stage_config(config, j, method, previous, labelled, fisher)
    scores.append(run_stage(c, stage_dir))
    previous = os.path.join(stage_dir, 'run')
    print(
      f'{method} after {names[j]}: ' + ', '.join(f'{t} {100 * scores[-1][t]:.2f}' for t in names)
    )
  return scores


def main(argv):
  del argv
  config = _CONFIG.value
  config_checks.validate(config)
  if config.objective.module != 'objectives.mtdnn':
    raise app.UsageError('--config must be configs/mtdnn.py:<tasks> (one head per task).')
  for method in _METHODS.value:
    if method not in METHODS:
      raise app.UsageError(f'--methods: {method!r} is not one of {METHODS}.')
  launch.route_logs(_WORKDIR.value, 'lifelong')
  names = config.objective.tasks.split(',')
  records = tasks.load_examples(config.data, 'train')
  by_task = [
    np.asarray([p for p, r in enumerate(records) if r['task'] == t]) for t in range(len(names))
  ]
  stage0 = os.path.join(_WORKDIR.value, 'stage0')
  first = stage_config(config, 0, 'naive', '', positions_file(stage0, by_task[0]), '')
  shared = {'scores': run_stage(first, stage0), 'run': os.path.join(stage0, 'run')}
  report, text = {}, []
  for method in _METHODS.value:
    matrix = lifelong.score_matrix(run_method(config, method, by_task, shared), names)
    report[method] = {'matrix': matrix.tolist(), **lifelong.summary(matrix)}
    text.append(lifelong.matrix_table(method, matrix, names))
  lines = ['| method | average final score | forgetting | backward transfer |', '|---|---|---|---|']
  for method, r in report.items():
    lines.append(f'| {method} | {r["average"]:.2f} | {r["forgetting"]:.2f} | '
                 f'{r["backward_transfer"]:.2f} |')  # fmt: skip
  out = os.path.join(_WORKDIR.value, 'lifelong')
  atomic_files.write_text(out + '.md', '\n\n'.join(['\n'.join(lines), *text]) + '\n')
  settings = {'tasks': names, 'steps': _STEPS.value, 'replay': _REPLAY.value,
              'ewc_lambda': _EWC.value, 'fisher_examples': _FISHER.value,
              'init_from': config.init_from, 'seed': _SEED.value}  # fmt: skip
  atomic_files.write_json(out + '.json', {'settings': settings, 'methods': report})
  print('\n'.join(lines))
  print(f'Wrote {out}.md and .json')


if __name__ == '__main__':
  app.run(main)
