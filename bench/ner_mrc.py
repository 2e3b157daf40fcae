"""CoNLL-2003 NER by tagging against NER as MRC, same encoder, steps and data (issue 16).

  python -m bench.ner_mrc --init_from /tmp/minilm --conll_dir ../shared/data/conll2003 \\
      --workdir /tmp/ner_bench --out /tmp/ner_mrc [--steps 300] [--positive_weights 1,5]

Two runs from `--init_from`: configs/conll.py (objectives/tagging.py: a linear layer over
the nine IOB2 tags per token) and configs/conll.py:mrc (objectives/mrc_ner.py: four queries
per sentence, start/end heads), each `--steps` steps of `--batch_size` sentences of
`--seq_len` tokens (the MRC rows add the query: `--seq_len` + 16) at `--learning_rate`,
evaluated once at the end on valid.txt with conlleval's entity-level F1; one MRC run per
`--positive_weights` entry (objective.mrc_positive_weight, on the gold starts' and ends'
cross-entropy terms and the gold pairs' match terms). Each MRC run is scored twice from its
checkpoint: decoded with the span-matching classifier (the paper's rule: a start, an end
and a positive match logit) and with the start/end heads alone (each positive start closed
at the nearest positive end: the rule without the match head), row 'mrc... start/end'.
An MRC step runs the encoder on four times the rows. Writes <out>.md and <out>.json; finished runs are reused.
"""

import argparse
import json
import os
import time

from bench import outputs
from configs import conll as conll_config
from evaluation import checkpoint_eval, during_training, loop, task_scores


def configure(args, variant: str, positive_weight: float = 1.0):
  c = conll_config.get_config(variant)
  if variant == 'mrc':
    c.objective.mrc_positive_weight = positive_weight
  c.init_from, c.data.conll_dir = args.init_from, args.conll_dir
  c.total_steps = c.eval_every_steps = c.checkpoint_every_steps = args.steps
  c.num_epochs = c.evals_per_epoch = 0
  c.batch_size, c.seq_len = args.batch_size, args.seq_len + (16 if variant == 'mrc' else 0)
  c.optimizer.learning_rate = args.learning_rate
  c.peak_flops_per_device = 1e11  # Skips the matmul-peak probe.
  return c


def start_end_metrics(config, workdir: str) -> dict:
  """The run's checkpoint scored on valid with the start/end decoding (the match
  classifier's outputs left out, objectives/mrc_ner.py's rule without it)."""
  loaded = checkpoint_eval.load_eval_params(config, workdir)
  harness = loaded.harness
  out = loop.predict_split(harness, loaded.params, harness.predict_step(loaded.shardings), 'valid')
  out = {name: value for name, value in out.items() if not name.startswith('match_')}
  records = harness.exp.documents('eval', 'valid')
  decoded = harness.exp.objective.decode_predictions(config.objective, out, records)
  return task_scores.score(decoded)['metrics']


def run(config, workdir: str) -> dict:
  path = os.path.join(workdir, 'bench.json')
  if not os.path.exists(path):
    start = time.time()
    during_training.train_and_evaluate(config, workdir)
    seconds = time.time() - start
    result = checkpoint_eval.evaluate_checkpoint(config, workdir)
    with open(path, 'w') as f:
      json.dump({'seconds': seconds, 'metrics': result['metrics']}, f)
  with open(path) as f:
    result = json.load(f)
  if config.objective.module == 'objectives.mrc_ner' and 'start_end_metrics' not in result:
    result['start_end_metrics'] = start_end_metrics(config, workdir)
    with open(path, 'w') as f:
      json.dump(result, f)
  return result


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--init_from', required=True)
  p.add_argument('--conll_dir', required=True)
  p.add_argument('--workdir', default='/tmp/ner_bench')
  p.add_argument('--out', default='')
  p.add_argument('--steps', type=int, default=300)
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--seq_len', type=int, default=64)
  p.add_argument('--learning_rate', type=float, default=5e-5)
  p.add_argument('--positive_weights', default='1', help='Comma-separated; an MRC run each.')
  args = p.parse_args()
  rows = {'tagging': run(configure(args, ''), os.path.join(args.workdir, 'tagging'))}
  for weight in (float(w) for w in args.positive_weights.split(',')):
    name = 'mrc' if weight == 1.0 else f'mrc_pw{weight:g}'
    rows[name] = run(configure(args, 'mrc', weight), os.path.join(args.workdir, name))
  lines = ['| CoNLL-2003 valid | entity F1 | precision | recall | token accuracy | train+eval s |',
           '|---|---|---|---|---|---|']  # fmt: skip
  for name, r in rows.items():
    scored = [(name, r['metrics'])]
    if 'start_end_metrics' in r:
      scored.append((f'{name} start/end', r['start_end_metrics']))
    for label, m in scored:
      lines.append(f'| {label} | {100 * m["f1"]:.2f} | {100 * m["precision"]:.2f} | '
                   f'{100 * m["recall"]:.2f} | {100 * m["token_accuracy"]:.2f} | {r["seconds"]:.0f} |')  # fmt: skip
  outputs.write('\n'.join(lines), {'settings': vars(args), 'results': rows}, args.out)


if __name__ == '__main__':
  main()
