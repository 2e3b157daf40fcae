"""Host-side corruption throughput of every objective's `make_preprocess`, side by side.

  python -m bench.objectives [--batch 64] [--seq-len 512] [--repeats 10] \\
      [--objectives mlm,wwm,span_masking] [--tokenizer embedded] [--json out.json]

What is timed is `preprocess(rows)`: the NumPy work that turns the loader's
packed rows into model batches on the host, once per step. The rows are shaped
like data/packing.py's (bench/throughput.py `synthetic_rows`: 1-4 framed
segments of random lengths and a short padded tail, in the objective's own
FRAMING); their tokens are real text by default: contiguous slices of the
embedded corpus (Python's pydoc topics) encoded with a SentencePiece model
trained on it here, so words span several pieces as in training
(`--tokenizer synthetic` uses random ids of bench/throughput.py's synthetic
tokenizer, where every piece is a word; a path loads that tokenizer).

Objectives are found, not listed: every module of objectives/ with a
`make_preprocess` (or a `configure`, objectives/multitask.py), each run with
the objective section of the first config naming it (configs/base.py, then the
others by name), so its keys and their defaults are the experiment's
(configs/base.py's when no config names it); a combination gets one row per
config naming it. An objective that
builds its own rows (`make_rows`, NSP sentence pairs) is skipped: its rows are
not packed rows. Row length is `--seq-len`, or the objective's `packed_length`
(T5 span corruption packs longer rows so its encoder rows fill `--seq-len`).

Tokens/s counts the positions of the packed rows fed in (batch x packed
length, padding included) over the median time of `--repeats` calls, after
`--warmup` untimed calls, cycling over a few distinct batches. Prints a table and
the records as JSON; `--json FILE` writes them to FILE; the exit status is 1 if
an objective failed. Imports no TensorFlow or TFDS (objectives load through
objectives/api.py, the embedded corpus and SentencePiece need neither).
"""

import argparse
import glob
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

from bench import throughput
from configs import loading
from data import sources, tokenizers
from objectives import api

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Distinct batches cycled through while timing (each row has its own example id).
_NUM_BATCHES = 4


def find_objectives() -> list[dict]:
  """Every objective with a host preprocess: [{'name', 'module', 'config'}], sorted by name.

  `config` is the path of the config file whose objective section it runs with;
  a module that fails to import gets an 'error' instead of a run.
  """
  configs = sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.py'), recursive=True))
  configs = [p for p in configs if os.path.basename(p) not in ('__init__.py', 'loading.py')]
  base = os.path.join(REPO, 'configs', 'base.py')
  by_module = {}  # module -> [(config path, objective section as a dict)]
  for path in [base] + [p for p in configs if p != base]:
    config = loading.load(path)
    if 'objective' not in config:
      continue  # An evaluation spec (configs/fewshot.py), not a training config.
    objective = config.objective
    by_module.setdefault(objective.module, []).append((path, objective.to_dict()))
  entries = []
  for path in sorted(glob.glob(os.path.join(REPO, 'objectives', '*.py'))):
    module = 'objectives.' + os.path.splitext(os.path.basename(path))[0]
    short = module.split('.')[1]
    try:
      imported = importlib.import_module(module)
    except Exception as e:  # Reported in the table, not fatal to the other objectives.
      entries.append(dict(name=short, module=module, config=base, error=f'import: {e!r}'))
      continue
    if not hasattr(imported, 'make_preprocess') and not hasattr(imported, 'configure'):
      continue  # A helper module (host_random, metrics, ...) or an auxiliary part.
    named = by_module.get(module, []) or [(base, None)]
    if not hasattr(imported, 'configure'):
      entries.append(dict(name=short, module=module, config=named[0][0]))
      continue
    # Assembled from its config (a combination): one row per distinct objective section.
    sections = {}
    for config_path, section in named:
      sections.setdefault(json.dumps(section, sort_keys=True), config_path)
    for config_path in sections.values():
      name = os.path.splitext(os.path.basename(config_path))[0]
      entries.append(
        dict(
          name=short if len(sections) == 1 else f'{short}@{name}', module=module, config=config_path
        )
      )
  return sorted(entries, key=lambda e: e['name'])


def load_tokenizer(spec: str, vocab_size: int, workdir: str):
  """The tokenizer and a token stream of real text (None for the synthetic tokenizer).

  Args:
    spec: 'embedded' (train SentencePiece on the embedded corpus), 'synthetic',
      or the path of a SentencePiece .model / WordPiece vocab .txt.
    vocab_size: pieces of the SentencePiece model trained for 'embedded'.
    workdir: where the trained model is written.
  """
  if spec == 'synthetic':
    return throughput.SyntheticTokenizer(vocab_size), None
  data_cfg = loading.load(os.path.join(REPO, 'configs', 'base.py')).data
  documents = sources.load_documents(data_cfg, 'train')
  if spec == 'embedded':
    path = tokenizers.train_sentencepiece(
      documents, os.path.join(workdir, 'spm'), vocab_size, data_cfg.tokenizer_train_docs
    )
  else:
    path = spec
  tokenizer = tokenizers.load_tokenizer(path)
  stream = np.concatenate([tokenizer.encode(d) for d in documents]).astype(np.int32)
  return tokenizer, stream


def text_rows(rng, rows: int, length: int, tokenizer, framing, stream, example_offset: int):
  """Packed rows (bench/throughput.py's layout) whose segments hold contiguous corpus text."""
  prefix_id, suffix_id = (getattr(tokenizer, name) for name in framing)
  batch = throughput.synthetic_rows(
    rng,
    rows,
    length,
    vocab_size=tokenizer.vocab_size,
    prefix_id=prefix_id,
    suffix_id=suffix_id,
    first_ordinary_id=len(tokenizer.special_ids),
    example_offset=example_offset,
  )
  if stream is None:
    return batch
  tokens, segment_ids, positions = batch['tokens'], batch['segment_ids'], batch['positions']
  body = (segment_ids > 0) & ~np.isin(tokens, (prefix_id, suffix_id))
  # Each segment reads the corpus from its own random offset, as a document piece would.
  offset = rng.integers(0, len(stream), size=(rows, segment_ids.max() + 1))  # [batch, segments]
  text = stream[(np.take_along_axis(offset, segment_ids, axis=1) + positions) % len(stream)]
  batch['tokens'] = np.where(body, text, tokens).astype(np.int32)
  return batch


def bench_one(entry: dict, args, tokenizer, stream) -> dict:
  """Times one objective's preprocess; returns its record."""
  config = loading.load(entry['config'])
  config.seq_len, config.batch_size = args.seq_len, args.batch
  objective = api.load(entry['module'], config.objective)
  record = dict(entry, config=os.path.relpath(entry['config'], REPO))
  if getattr(objective, 'make_rows', None) is not None:
    return dict(record, skipped='builds its own rows (make_rows), not packed rows')
  length = api.packed_length(objective, config.objective, config.seq_len)
  preprocess = objective.make_preprocess(config.objective, tokenizer, config.seed)
  rng = np.random.default_rng(config.seed)
  batches = [
    text_rows(rng, args.batch, length, tokenizer, objective.FRAMING, stream, i * args.batch)
    for i in range(_NUM_BATCHES)
  ]
  for i in range(args.warmup):
    preprocess(batches[i % _NUM_BATCHES])
  times = []
  for i in range(args.repeats):
    start = time.perf_counter()
    out = preprocess(batches[i % _NUM_BATCHES])
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  weights = out.get('weights')
  return dict(
    record,
    batch=args.batch,
    packed_length=length,
    repeats=args.repeats,
    ms_median=median * 1e3,
    ms_min=min(times) * 1e3,
    tokens_per_s=args.batch * length / median,
    predicted_fraction=None if weights is None else float(np.mean(np.asarray(weights) > 0)),
  )


def format_table(records: list[dict]) -> str:
  """One line per objective: row length, median and min ms per batch, tokens/s."""
  columns = (
    ('objective', lambda r: r['name']),
    ('config', lambda r: r['config']),
    ('rows', lambda r: f'{r["batch"]} x {r["packed_length"]}' if 'batch' in r else '-'),
    ('ms median', lambda r: f'{r["ms_median"]:.2f}' if 'ms_median' in r else '-'),
    ('ms min', lambda r: f'{r["ms_min"]:.2f}' if 'ms_min' in r else '-'),
    ('tokens/s', lambda r: f'{r["tokens_per_s"]:,.0f}' if 'tokens_per_s' in r else '-'),
    (
      'predicted',
      lambda r: f'{r["predicted_fraction"]:.3f}' if r.get('predicted_fraction') else '-',
    ),
    ('note', lambda r: r.get('skipped') or r.get('error') or ''),
  )
  cells = [[fn(r) for _, fn in columns] for r in records]
  widths = [max(len(name), *(len(row[i]) for row in cells)) for i, (name, _) in enumerate(columns)]
  pad = lambda text, i: text.ljust(widths[i]) if i in (0, 1, 7) else text.rjust(widths[i])  # noqa: E731
  lines = [' | '.join(pad(name, i) for i, (name, _) in enumerate(columns)).rstrip()]
  lines.append('-+-'.join('-' * w for w in widths))
  lines += [' | '.join(pad(c, i) for i, c in enumerate(row)).rstrip() for row in cells]
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
    prog='python -m bench.objectives',
    description="Host-side throughput of the objectives' preprocess on packed rows.",
    allow_abbrev=False,
  )
  parser.add_argument('--batch', type=int, default=64, help='Rows per batch.')
  parser.add_argument('--seq-len', type=int, default=512, help='config.seq_len of every run.')
  parser.add_argument('--repeats', type=int, default=10, help='Timed calls per objective.')
  parser.add_argument('--warmup', type=int, default=2, help='Untimed calls before timing.')
  parser.add_argument(
    '--objectives', default='', help='Comma list of names (see the table); default: all found.'
  )
  parser.add_argument(
    '--tokenizer',
    default='embedded',
    help="'embedded' (SentencePiece trained on the embedded corpus), 'synthetic', or a path.",
  )
  parser.add_argument('--vocab-size', type=int, default=4096, help='For --tokenizer embedded.')
  parser.add_argument('--json', default=None, help='Also write the records to this file.')
  args = parser.parse_args(argv)
  if args.batch < 1 or args.seq_len < 16 or args.repeats < 1 or args.warmup < 0:
    parser.error('--batch and --repeats must be >= 1, --seq-len >= 16, --warmup >= 0.')
  entries = find_objectives()
  if args.objectives:
    wanted = [name.strip() for name in args.objectives.split(',') if name.strip()]
    unknown = [name for name in wanted if name not in {e['name'] for e in entries}]
    if unknown:
      parser.error(
        f'--objectives: unknown {unknown}; known: {", ".join(e["name"] for e in entries)}.'
      )
    entries = [e for e in entries if e['name'] in wanted]

  records = []
  with tempfile.TemporaryDirectory() as workdir:  # Kept: word2vec reads the model file.
    tokenizer, stream = load_tokenizer(args.tokenizer, args.vocab_size, workdir)
    for entry in entries:
      if 'error' in entry:
        records.append(dict(entry, config=os.path.relpath(entry['config'], REPO)))
        continue
      try:
        records.append(bench_one(entry, args, tokenizer, stream))
      except Exception as e:  # One broken objective must not hide the others' figures.
        traceback.print_exc()
        records.append(dict(entry, config=os.path.relpath(entry['config'], REPO), error=repr(e)))
  print(format_table(records))
  print(
    f'tokenizer: {args.tokenizer} ({tokenizer.vocab_size} ids); tokens/s = batch x packed length'
    f' / median of {args.repeats} calls after {args.warmup} warm-up.'
  )
  print(json.dumps(records, indent=2))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(records, f, indent=2)
  if any('error' in r for r in records):
    sys.exit(1)
  return records


if __name__ == '__main__':
  main(sys.argv[1:])
