"""NER by tagging against NER as MRC, same encoder, steps and data (issue 16): CoNLL-2003
or MSRA Chinese NER.

  python -m bench.ner_mrc --init_from /tmp/minilm --data_dir ../shared/data/conll2003 \\
      --workdir /tmp/ner_bench --out /tmp/ner_mrc [--steps 300] [--positive_weights 1,5]
  python -m bench.ner_mrc --dataset msra --data_dir ../shared/data/zh/ChineseNlpCorpus \\
      --workdir /tmp/msra_bench --out /tmp/msra_mrc --steps 1000 [--init_from CKPT]

Two runs from `--init_from`: configs/conll.py[:msra] (objectives/tagging.py: a linear
layer over the IOB2 tags per token) and configs/conll.py:[msra,]mrc (objectives/mrc_ner.py:
a query per entity type and sentence, start/end heads), each `--steps` steps of
`--batch_size` sentences of `--seq_len` tokens (the MRC rows add the query: `--seq_len` +
16 for CoNLL's English queries, + 28 for MSRA's Chinese ones) at `--learning_rate`,
evaluated once at the end on the valid split with conlleval's entity-level F1; one MRC run
per `--positive_weights` entry (objective.mrc_positive_weight, on the gold starts' and
ends' cross-entropy terms and the gold pairs' match terms), each with the match loss at
`--match_weight` (objective.mrc_match_weight: 1 ours; 0.1 the span weight of Li et al.'s
released scripts as we recall them, not checked here; 0 no match head; the run's folder
gets the suffix _mw<weight> unless it is 1). Each MRC run with a match head is scored
twice from its checkpoint: decoded with the span-matching classifier (the paper's rule: a start,
an end and a positive match logit) and with the start/end heads alone (each positive start
closed at the nearest positive end: the rule without the match head), row 'mrc... start/end'.
An MRC step runs the encoder on T times the rows (T types: 4 for CoNLL, 3 for MSRA).

Without `--init_from` both runs start from a random init (the same seed) of a
`--scratch_layers` x `--scratch_width` BERT (heads of 64) with a character vocabulary
written from the train split's sentences and the queries (data/wordpiece.character_pieces:
one piece per Chinese character), the way to train MSRA here, where no Chinese checkpoint
ships offline (MiniLM's English vocabulary holds 251 of MSRA's 4,832 characters, 39% of
their occurrences). Writes <out>.md and <out>.json; finished runs are reused.
"""

import argparse
import json
import os
import time

from bench import outputs
from configs import conll as conll_config
from data import tasks, wordpiece
from evaluation import checkpoint_eval, during_training, loop, task_scores
from objectives import mrc_ner

# Sub-tokens the MRC rows add for [CLS] query [SEP]: the longest query of each dataset's
# (CoNLL's English descriptions, WordPiece; MSRA's, a token per character) fits.
QUERY_ROOM = {'conll': 16, 'msra': 28}
SCRATCH_LR = 5e-4  # --learning_rate's default without --init_from (5e-5 with it).


def configure(args, task: str, positive_weight: float = 1.0, vocab_path: str = ''):
  """The config of one run; `task` 'tagging' or 'mrc' (with `positive_weight` and
  --match_weight). `vocab_path`: the character vocabulary of a run from scratch (no
  --init_from)."""
  parts = (['msra'] if args.dataset == 'msra' else []) + (['mrc'] if task == 'mrc' else [])
  c = conll_config.get_config(','.join(parts))
  if task == 'mrc':
    c.objective.mrc_positive_weight = positive_weight
    c.objective.mrc_match_weight = args.match_weight
  if args.dataset == 'msra':
    c.data.clue_dir = args.data_dir
  else:
    c.data.conll_dir = args.data_dir
  c.init_from = args.init_from
  if not args.init_from:  # From scratch: a small BERT and the character vocabulary.
    c.model.preset = 'bert-tiny'
    c.model.num_layers, c.model.d_model = args.scratch_layers, args.scratch_width
    c.model.num_heads, c.model.mlp_dim = args.scratch_width // 64, 4 * args.scratch_width
    c.data.tokenizer_path = vocab_path
  c.total_steps = c.eval_every_steps = c.checkpoint_every_steps = args.steps
  c.num_epochs = c.evals_per_epoch = 0
  room = QUERY_ROOM[args.dataset] if task == 'mrc' else 0
  c.batch_size, c.seq_len = args.batch_size, args.seq_len + room
  c.optimizer.learning_rate = args.learning_rate or (5e-5 if args.init_from else SCRATCH_LR)
  return c


def character_vocab(args) -> str:
  """Writes (once) and returns the path of the from-scratch runs' vocabulary: the characters
  of the train split's sentences and of the dataset's MRC queries."""
  path = os.path.join(args.workdir, 'vocab.txt')
  if not os.path.exists(path):
    records = tasks.load_examples(configure(args, 'tagging').data, 'train')
    queries = mrc_ner.MSRA_QUERIES if args.dataset == 'msra' else mrc_ner.CONLL_QUERIES
    texts = [' '.join(r['words']) for r in records] + list(queries.values())
    wordpiece.write_vocab(wordpiece.character_pieces(texts), path)
  return path


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
    during_training.train_to_completion(config, workdir)
    seconds = time.time() - start
    result = checkpoint_eval.evaluate_checkpoint(config, workdir)
    with open(path, 'w') as f:
      json.dump({'seconds': seconds, 'metrics': result['metrics']}, f)
  with open(path) as f:
    result = json.load(f)
  matched = config.objective.module == 'objectives.mrc_ner' and config.objective.mrc_match_weight
  if matched and 'start_end_metrics' not in result:  # Without a match head: the same decoding.
    result['start_end_metrics'] = start_end_metrics(config, workdir)
    with open(path, 'w') as f:
      json.dump(result, f)
  return result


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--dataset', choices=tuple(QUERY_ROOM), default='conll')
  p.add_argument('--data_dir', required=True, help='conll: the CoNLL-2003 folder; msra: the '
                 "folder holding dh_msra.zip (../shared/data/zh/ChineseNlpCorpus).")  # fmt: skip
  p.add_argument('--init_from', default='', help='A converted checkpoint; none: from scratch.')
  p.add_argument('--scratch_layers', type=int, default=4)
  p.add_argument('--scratch_width', type=int, default=256)
  p.add_argument('--workdir', default='/tmp/ner_bench')
  p.add_argument('--out', default='')
  p.add_argument('--steps', type=int, default=300)
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--seq_len', type=int, default=64)
  p.add_argument('--learning_rate', type=float, default=0.0,
                 help=f'0: 5e-5 with --init_from, {SCRATCH_LR:g} from scratch.')  # fmt: skip
  p.add_argument('--positive_weights', default='1', help='Comma-separated; an MRC run each.')
  p.add_argument('--match_weight', type=float, default=1.0,
                 help="The MRC runs' objective.mrc_match_weight (0: no match head).")  # fmt: skip
  args = p.parse_args()
  vocab = '' if args.init_from else character_vocab(args)
  rows = {'tagging': run(configure(args, 'tagging', vocab_path=vocab),
                         os.path.join(args.workdir, 'tagging'))}  # fmt: skip
  for weight in (float(w) for w in args.positive_weights.split(',')):
    name = 'mrc' if weight == 1.0 else f'mrc_pw{weight:g}'
    name += '' if args.match_weight == 1.0 else f'_mw{args.match_weight:g}'
    config = configure(args, 'mrc', weight, vocab)
    rows[name] = run(config, os.path.join(args.workdir, name))
  title = {'conll': 'CoNLL-2003 valid', 'msra': 'MSRA valid'}[args.dataset]
  lines = [f'| {title} | entity F1 | precision | recall | token accuracy | train+eval s |',
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
