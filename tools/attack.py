"""How robust fine-tuned classifiers are to swapped words: a greedy word-substitution
attack (evaluation/robustness.py) on the first dev examples of each run, side by side.

  python -m tools.attack --runs PLAIN,ADVERSARIAL --examples 500 --out /tmp/attack

--runs are train.py fine-tuning runs of a sentence (pair) classification task (each read
at its best checkpoint, else its newest). Each run's examples are attacked with the
neighbours of its own embedding table. Prints and writes in --out:

  attack.md     the table (clean accuracy, accuracy under attack, success rate, mean
                words changed) and a few successful attacks per run, before and after;
  attack.json   the figures and every example's swaps (position, old, new piece).
"""

import os

from absl import app, flags

from configs import base
from data import atomic_files
from evaluation import fine_tuned_classifier, robustness

_RUNS = flags.DEFINE_list('runs', None, 'Fine-tuned classification runs (train.py workdirs).')
_OUT = flags.DEFINE_string('out', None, 'Directory for attack.md and attack.json.')
_EXAMPLES = flags.DEFINE_integer('examples', 200, 'The first N dev records of each run.')
_NEIGHBOURS = flags.DEFINE_integer('neighbours', 8, 'Nearest words tried per position.')
_MAX_FRACTION = flags.DEFINE_float('max_fraction', 0.2, 'Most words changed (fraction).')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Rows per forward pass.')
_SHOWN = flags.DEFINE_integer('shown', 3, 'Successful attacks shown per run in attack.md.')


def attack_run(run: str, examples: int, *, neighbours: int, max_fraction: float,
               batch_size: int) -> dict:  # fmt: skip
  """The attack's figures and examples on `run`'s first `examples` dev records."""
  classifier = fine_tuned_classifier.load(run, base.get_config())
  records = classifier.dev_records(examples)
  rows = classifier.rows([(r['text_a'], r['text_b']) for r in records])
  labels = [int(r['label']) for r in records]
  results = robustness.attack(
    classifier.model, classifier.params, classifier.tokenizer, rows, labels, table=classifier.token_table(),
    k=neighbours, max_fraction=max_fraction, batch_size=batch_size,
  )  # fmt: skip
  figures = robustness.summarize(results)
  swaps = [
    {
      'label': r.label, 'clean': r.clean_prediction, 'attacked': r.prediction,
      'swaps': [(p, classifier.tokenizer.id_to_piece(o), classifier.tokenizer.id_to_piece(n))
                for p, o, n in r.swaps],
      'text': ' '.join(classifier.pieces(r.tokens)),
    }
    for r in results
  ]  # fmt: skip
  return {'run': classifier.description, 'figures': figures, 'examples': swaps}


def table(reports: list[dict]) -> str:
  lines = [
    '| run | examples | clean acc | acc under attack | success rate | words changed |',
    '|---|---|---|---|---|---|',
  ]
  for r in reports:
    f = r['figures']
    lines.append(
      f'| {r["run"]} | {f["examples"]} | {100 * f["clean_accuracy"]:.1f} | '
      f'{100 * f["attacked_accuracy"]:.1f} | {100 * f["success_rate"]:.1f} | '
      f'{f["mean_words_changed"]:.2f} ({100 * f["mean_fraction_changed"]:.0f}%) |'
    )
  return '\n'.join(lines)


def main(argv):
  del argv
  if not _RUNS.value or not _OUT.value:
    raise app.UsageError('Pass --runs and --out.')
  reports = []
  for run in _RUNS.value:
    reports.append(attack_run(run, _EXAMPLES.value, neighbours=_NEIGHBOURS.value,
                              max_fraction=_MAX_FRACTION.value, batch_size=_BATCH.value))  # fmt: skip
    print(table(reports[-1:]).splitlines()[-1], flush=True)
  settings = {'examples': _EXAMPLES.value, 'neighbours': _NEIGHBOURS.value,
              'max_fraction': _MAX_FRACTION.value}  # fmt: skip
  text = [table(reports), '']
  for r in reports:
    won = [e for e in r['examples'] if e['clean'] == e['label'] != e['attacked']]
    text.append(f'{r["run"]}: {len(won)} successful attacks; the first {_SHOWN.value}:')
    for e in won[: _SHOWN.value]:
      swaps = ', '.join(f'{old} -> {new}' for _, old, new in e['swaps'])
      text.append(f'- label {e["label"]} -> {e["attacked"]} by {swaps}: {e["text"]}')
    text.append('')
  atomic_files.write_text(os.path.join(_OUT.value, 'attack.md'), '\n'.join(text))
  atomic_files.write_json(os.path.join(_OUT.value, 'attack.json'),
                          {'settings': settings, 'runs': reports})  # fmt: skip
  print(table(reports))
  print(f'Wrote {_OUT.value}/attack.md and attack.json')


if __name__ == '__main__':
  app.run(main)
