"""Pool-based active learning on a classification task: rounds of fine-tune, score the
unlabelled pool, ask for labels (evaluation/active_learning.py), against random sampling.

  python -m tools.active_learning --config configs/active_learning.py:sst2 \\
    --config.init_from=CKPT --config.data.glue_dir=../shared/data/glue \\
    --workdir /tmp/al --pool 400 --budget 30 --rounds 3 \\
    --strategies random,entropy,margin,bald,coreset --seeds 0,1,2

For each seed s: the pool is `--pool` train records, the same number of each label
(data/tasks.few_shot_positions, drawn by s), whose labels are held back; round 0 labels
budget/rounds of them drawn at random (shared by every strategy); each later round
fine-tunes a fresh run from `init_from` on the labels so far (train.py's trainer with
`data.train_records`, the config's fixed recipe), scores its dev split, scores the pool
and reveals the labels of the next budget/rounds examples its strategy picks, until
`--budget` labels are used. `--full_pool` adds a run on the whole pool labelled (the
ceiling). Every run is evaluated once, on the whole dev split, at its end.

Writes in --workdir: seed<s>/round0/ and seed<s>/<strategy>/round<r>/ (labelled.txt: the
train positions labelled, queried.json: what the previous round's model chose and why,
run/: the train.py run with eval.json), and active_learning.md / .json / .png: dev score
by labels used per strategy (median, min and max over seeds) and the learning curves.
Killed at any point, the same command goes on: a finished run (eval.json) is read back,
an unfinished one resumes from its checkpoint, a round's labels are written atomically
after its query. Unless JAX_COMPILATION_CACHE_DIR is set, the compiled programs are kept in
--workdir/jax_cache, so the rounds after the first skip compilation.
"""

import json
import os
import statistics

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from configs import base
from data import atomic_files, tasks
from evaluation import active_learning, checkpoint_eval, during_training, fine_tuned_classifier
from training import config_checks, launch

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/active_learning.py:<task>.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Rounds, runs and the report.')
_POOL = flags.DEFINE_integer('pool', 400, 'Unlabelled pool: train records, balanced by label.')
_BUDGET = flags.DEFINE_integer('budget', 30, 'Labels used in all, the random seed set included.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Fine-tuning rounds (the first on random labels).')
_STRATEGIES = flags.DEFINE_list('strategies', list(active_learning.STRATEGIES), 'Strategies.')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Pool, seed set and training seeds.')
_MC = flags.DEFINE_integer('mc_samples', 10, "bald's dropout passes per pool example.")
_FULL = flags.DEFINE_bool('full_pool', True, 'Also fine-tune on the whole pool labelled.')
flags.mark_flags_as_required(['config', 'workdir'])
FULL_POOL = 'whole pool labelled'  # The ceiling's row.


def label_counts(budget: int, rounds: int) -> list[int]:
  """Labels used after each round: budget split into `rounds` near-equal steps."""
  if rounds < 1 or budget < rounds:
    raise ValueError(
      f'--budget {budget} over --rounds {rounds}: need rounds >= 1, budget >= rounds.'
    )
  return [budget * (r + 1) // rounds for r in range(rounds)]


def balanced_pool(records: list[dict], size: int, seed: int) -> np.ndarray:
  """`size` train positions, size / labels of each label, drawn by `seed`.

  Raises:
    ValueError: a size that the labels do not divide.
  """
  labels = sorted({r['label'] for r in records})
  if size % len(labels):
    raise ValueError(f'--pool {size} is not a multiple of the {len(labels)} labels {labels}.')
  return np.asarray(tasks.few_shot_positions(records, size // len(labels), seed))


def score(config, round_dir: str, positions, seed: int) -> float:
  """Fine-tunes on the train records at `positions` in `round_dir`/run (unless done) and
  returns its dev score, the config's task score in percent."""
  run = os.path.join(round_dir, 'run')
  done = os.path.join(run, 'eval.json')
  if not os.path.exists(done):
    labelled = os.path.join(round_dir, 'labelled.txt')
    if not os.path.exists(labelled):
      tasks.write_positions(labelled, positions, f'{len(positions)} train positions labelled')
    config = config.copy_and_resolve_references()
    config.data.train_records = labelled
    config.seed = seed
    during_training.train_to_completion(config, run)
    checkpoint_eval.evaluate_checkpoint(config, run)
  with open(done) as f:
    result = json.load(f)
  return 100 * float(result['scores'][config.objective.task])


def query(run: str, records, pool, labelled, strategy: str, k: int, seed: int) -> dict:
  """The `k` pool examples `strategy` picks with `run`'s model: their train positions and
  the figures behind the choice."""
  classifier = fine_tuned_classifier.load(run, base.get_config())
  in_pool = {int(p): i for i, p in enumerate(pool)}
  rows = classifier.rows([(records[p]['text_a'], records[p]['text_b']) for p in pool])
  samples = _MC.value if strategy == 'bald' else 0  # Only BALD reads dropout samples.
  scored = active_learning.score_pool(classifier, rows, samples, seed)
  chosen = active_learning.choose(strategy, scored, [in_pool[p] for p in labelled], k, seed)
  pool_labels = np.asarray([records[p]['label'] for p in pool])
  return {
    'strategy': strategy,
    'chosen': [int(pool[i]) for i in chosen],
    'labels': [int(pool_labels[i]) for i in chosen],
    'entropy': [float(active_learning.entropy(scored['probs'][i])) for i in chosen],
    'pool_entropy_mean': float(active_learning.entropy(scored['probs']).mean()),
    'pool_accuracy': float((scored['probs'].argmax(-1) == pool_labels).mean()),
  }


def run_strategy(config, seed: int, strategy: str, records, pool, counts) -> list[float]:
  """Dev scores after each round of `strategy` under `seed`."""
  seed_dir = os.path.join(_WORKDIR.value, f'seed{seed}')
  rng = np.random.default_rng([seed, 0])
  labelled = sorted(int(p) for p in rng.choice(pool, size=counts[0], replace=False))
  round_dir = os.path.join(seed_dir, 'round0')
  scores = [score(config, round_dir, labelled, seed)]
  for r in range(1, len(counts)):
    next_dir = os.path.join(seed_dir, strategy, f'round{r}')
    queried = os.path.join(next_dir, 'queried.json')
    if not os.path.exists(queried):
      found = query(os.path.join(round_dir, 'run'), records, pool, labelled, strategy,
                    counts[r] - counts[r - 1], seed * 1000 + r)  # fmt: skip
      atomic_files.write_json(queried, found)
    with open(queried) as f:
      labelled = sorted(labelled + json.load(f)['chosen'])
    round_dir = next_dir
    scores.append(score(config, round_dir, labelled, seed))
    print(f'seed {seed} {strategy} round {r}: {len(labelled)} labels, dev {scores[-1]:.2f}')
  return scores


def summarize(results: dict, counts: list[int], pool: int) -> list[dict]:
  """Per strategy: the labels after each round and the median, min and max over seeds."""
  rows = []
  for name, per_seed in results.items():
    columns = list(zip(*per_seed.values(), strict=True))
    rows.append({
      'strategy': name,
      'labels': [pool] if name == FULL_POOL else counts,
      'median': [statistics.median(c) for c in columns],
      'min': [min(c) for c in columns],
      'max': [max(c) for c in columns],
    })  # fmt: skip
  return rows


def table(rows: list[dict], counts: list[int], seeds: int) -> str:
  lines = [
    f'| strategy ({seeds} seeds: median [min, max]) | '
    + ' | '.join(f'{n} labels' for n in counts) + ' |',
    '|---|' + '---|' * len(counts),
  ]  # fmt: skip
  for row in rows:
    cells = [f'{m:.2f} [{lo:.2f}, {hi:.2f}]' for m, lo, hi in
             zip(row['median'], row['min'], row['max'], strict=True)]  # fmt: skip
    if row['strategy'] == FULL_POOL:  # One figure, in the last column.
      cells = [''] * (len(counts) - 1) + [f'{row["labels"][0]} labels: {cells[0]}']
    lines.append(f'| {row["strategy"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot(rows: list[dict], path: str, title: str) -> None:
  import matplotlib  # Deferred: only the picture needs it.

  matplotlib.use('Agg')  # Files only, no display.
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for row in rows:
    if row['strategy'] == FULL_POOL:
      ax.axhline(row['median'][0], color='grey', linestyle='--', label=f'{row["strategy"]}')
      continue
    line = ax.plot(row['labels'], row['median'], marker='o', label=row['strategy'])[0]
    ax.fill_between(row['labels'], row['min'], row['max'], color=line.get_color(), alpha=0.15)
  ax.set_xlabel('labels used')
  ax.set_ylabel('dev score (median over seeds; band: min-max)')
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  config = _CONFIG.value
  config_checks.validate(config)
  launch.route_logs(_WORKDIR.value, 'active_learning')  # Library records to --workdir/logs.
  if config.data.train_records or config.data.train_per_label:
    raise app.UsageError('The rounds choose the train records: leave data.train_records and '
                         'data.train_per_label unset.')  # fmt: skip
  for strategy in _STRATEGIES.value:
    if strategy not in active_learning.STRATEGIES:
      raise app.UsageError(
        f'--strategies: {strategy!r} is not one of {active_learning.STRATEGIES}.'
      )
  if not jax.config.jax_compilation_cache_dir:  # Every round compiles the same programs.
    jax.config.update('jax_compilation_cache_dir', os.path.join(_WORKDIR.value, 'jax_cache'))
  counts = label_counts(_BUDGET.value, _ROUNDS.value)
  records = tasks.load_examples(config.data, 'train')
  seeds = [int(s) for s in _SEEDS.value]
  results = {s: {} for s in _STRATEGIES.value}
  if _FULL.value:
    results[FULL_POOL] = {}
  for seed in seeds:
    pool = balanced_pool(records, _POOL.value, seed)
    seed_dir = os.path.join(_WORKDIR.value, f'seed{seed}')
    tasks.write_positions(os.path.join(seed_dir, 'pool.txt'), pool, f'seed {seed} pool')
    for strategy in _STRATEGIES.value:
      results[strategy][seed] = run_strategy(config, seed, strategy, records, pool, counts)
    if _FULL.value:
      results[FULL_POOL][seed] = [score(config, os.path.join(seed_dir, 'all'), pool, seed)]
  rows = summarize(results, counts, _POOL.value)
  task = config.data.task or config.objective.task
  text = table(rows, counts, len(seeds))
  out = os.path.join(_WORKDIR.value, 'active_learning')
  atomic_files.write_text(out + '.md', text + '\n')
  settings = {'pool': _POOL.value, 'budget': _BUDGET.value, 'rounds': _ROUNDS.value,
              'mc_samples': _MC.value, 'init_from': config.init_from, 'seeds': seeds}  # fmt: skip
  atomic_files.write_json(out + '.json', {'settings': settings, 'summary': rows,
                                          'per_seed': results})  # fmt: skip
  plot(rows, out + '.png', f'{task}: pool {_POOL.value}, {len(seeds)} seeds')
  print(text)
  print(f'Wrote {out}.md, .json and .png')


if __name__ == '__main__':
  app.run(main)
