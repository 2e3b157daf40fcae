"""Paper-style results tables over many fine-tuning runs (`eval.py --table glue --runs 'PATTERN'`).

Each fine-tuning run leaves `<run_dir>/eval.json` (written by `eval.py --config ... --workdir`):
its benchmark, task, seed, `scores` (fractions, one per table column) and an optional `reference`
(the paper's numbers, in percent as papers print them, with a `source` string). This module
gathers those files from a glob pattern and aggregates them per column over seeds.

Conventions, those of the papers the table is compared against:

- Scores are shown x100. The headline number per task is the median over seeds (the ELECTRA
  protocol, Clark et al. 2020, Sec. 3.1: "we report the median of 10 fine-tuning runs"); mean,
  sample standard deviation, min and max are given alongside.
- The GLUE average (BERT, Devlin et al. 2019 Table 1; ELECTRA Table 2) is the plain mean over the
  8 tasks CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE: WNLI and AX are excluded, and MNLI counts
  once, by its matched accuracy `mnli_m`. When some of these tasks have no runs the average covers
  only those present and the table lists the missing ones, so that a partial average is never read
  as a full one.
- Other benchmarks (squad, conll, ...) get their columns in first-seen order and no average.
"""

import glob
import json
import logging
import math
import os
import statistics
from collections.abc import Mapping, Sequence

# Column order of the GLUE leaderboard; score names outside it follow, sorted.
GLUE_COLUMNS = (
  'cola',
  'sst2',
  'mrpc',
  'stsb',
  'qqp',
  'mnli_m',
  'mnli_mm',
  'qnli',
  'rte',
  'wnli',
  'ax',
)
# The 8 columns the GLUE average is taken over: MNLI once (matched), no WNLI, no AX.
GLUE_AVERAGE_COLUMNS = ('cola', 'sst2', 'mrpc', 'stsb', 'qqp', 'mnli_m', 'qnli', 'rte')
GLUE_AVERAGE_CONVENTION = (
  'mean of per-task medians over the 8 GLUE tasks cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte '
  '(MNLI counted once, as mnli_m; wnli and ax excluded: the BERT/ELECTRA convention)'
)

log = logging.getLogger(__name__)


class Runs(list):
  """The runs `gather` read: a list of eval.json dicts, plus the directories it skipped."""

  def __init__(self, runs=(), skipped: Sequence[str] = ()):
    super().__init__(runs)
    self.skipped = list(skipped)


def _is_number(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_run(run, where: str) -> None:
  """Raises ValueError naming `where` unless `run` follows the eval.json contract."""
  if not isinstance(run, Mapping):
    raise ValueError(f'{where}: expected a JSON object, got {type(run).__name__}')
  if not isinstance(run.get('benchmark'), str):
    raise ValueError(f'{where}: "benchmark" must be a string, got {run.get("benchmark")!r}')
  scores = run.get('scores')
  if not isinstance(scores, Mapping) or not scores:
    raise ValueError(f'{where}: "scores" must be a non-empty object, got {scores!r}')
  for name, value in scores.items():
    if not _is_number(value):
      raise ValueError(f'{where}: score {name!r} is not a finite number: {value!r}')
    # Scores are fractions (MCC and correlations may be negative); a value past 1 is a percentage
    # written by mistake and would be shown x100 again.
    if abs(value) > 1:
      raise ValueError(f'{where}: score {name!r} = {value} is not a fraction in [-1, 1]')
  seed = run.get('seed')
  if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
    raise ValueError(f'{where}: "seed" must be an integer or null, got {seed!r}')
  reference = run.get('reference')
  if reference is None:
    return
  if not isinstance(reference, Mapping) or not isinstance(reference.get('scores'), Mapping):
    raise ValueError(f'{where}: "reference" must be null or {{"scores": {{...}}, "source": ...}}')
  if not isinstance(reference.get('source'), str):
    raise ValueError(f'{where}: reference "source" must be a string')
  for name, value in reference['scores'].items():
    if not _is_number(value) or abs(value) > 100:
      raise ValueError(f'{where}: reference {name!r} = {value!r} is not a percentage')


def gather(pattern: str) -> Runs:
  """Reads `<dir>/eval.json` of every run directory matching a glob pattern.

  Args:
    pattern: a glob over run directories, e.g. 'runs/glue/*/seed*' or 'runs/**' ('**' recurses).
      A match that is itself an eval.json file stands for its directory; other files are ignored.

  Returns:
    A `Runs` list of the eval.json dicts, each with its directory added as 'run_dir', sorted by
    directory; `.skipped` lists matched directories without an eval.json and without any other
    matched directory below them (runs that left no result; also logged).

  Raises:
    FileNotFoundError: nothing matches the pattern.
    ValueError: an eval.json is not valid JSON or breaks the contract (the message names it).
  """
  matches = glob.glob(os.path.expanduser(pattern), recursive=True)
  if not matches:
    raise FileNotFoundError(f'no run directory matches {pattern!r}')
  dirs, seen = [], set()
  for path in sorted(matches):
    if os.path.isfile(path) and os.path.basename(path) == 'eval.json':
      path = os.path.dirname(path) or '.'
    if not os.path.isdir(path):
      continue
    # 'runs/**' yields the root as 'runs/'; a directory reached twice (links) is read once.
    path = os.path.normpath(path)
    key = os.path.realpath(path)
    if key not in seen:
      seen.add(key)
      dirs.append(path)
  runs, skipped = [], []
  for run_dir in dirs:
    file = os.path.join(run_dir, 'eval.json')
    if not os.path.isfile(file):
      # A '**' pattern also matches the folders holding runs (runs/glue, runs/glue/sst2): only a
      # directory with no other match below it is a run that left no eval.json.
      below = run_dir.rstrip(os.sep) + os.sep
      if not any(d.startswith(below) for d in dirs):
        skipped.append(run_dir)
      continue
    try:
      with open(file) as f:
        run = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f'{file}: malformed eval.json: {e}') from e
    _check_run(run, file)
    runs.append({**run, 'run_dir': run_dir})
  if skipped:
    log.warning('skipped %d directories matching %r without an eval.json', len(skipped), pattern)
  return Runs(runs, skipped)


def _column_order(names: list[str], benchmark: str) -> list[str]:
  """GLUE: leaderboard order, then unknown names sorted. Others: first-seen order."""
  if benchmark != 'glue':
    return names
  known = [c for c in GLUE_COLUMNS if c in names]
  return known + sorted(n for n in names if n not in GLUE_COLUMNS)


def _column(name: str, entries: list[dict]) -> dict:
  """Statistics of one column over its runs, x100, with its (agreed) reference."""
  entries = sorted(entries, key=lambda e: (e['seed'] is None, e['seed'] or 0, e['run_dir']))
  values = [100 * e['score'] for e in entries]
  given = [e for e in entries if e['reference'] is not None]
  distinct = {(e['reference'], e['source']) for e in given}
  if len(distinct) > 1:
    listing = '; '.join(f'{e["run_dir"]}: {e["reference"]} ({e["source"]})' for e in given)
    raise ValueError(f'runs of column {name!r} disagree on the reference: {listing}')
  reference, source = distinct.pop() if distinct else (None, None)
  unreferenced = [e['run_dir'] for e in entries if e['reference'] is None]
  median = statistics.median(values)
  return {
    'name': name,
    'n': len(values),
    'median': median,
    'mean': statistics.fmean(values),
    # Sample standard deviation over seeds; undefined for one run.
    'std': statistics.stdev(values) if len(values) > 1 else None,
    'min': min(values),
    'max': max(values),
    'values': values,
    'seeds': [e['seed'] for e in entries],
    'runs': [e['run_dir'] for e in entries],
    'reference': reference,
    'reference_source': source,
    # Only worth a warning when other runs of the column do give a reference.
    'runs_without_reference': unreferenced if given else [],
    'delta': None if reference is None else median - reference,
  }


def _glue_average(columns: dict[str, dict]) -> dict:
  """The GLUE average over the standard tasks present, with its coverage spelled out."""
  covered = [c for c in GLUE_AVERAGE_COLUMNS if c in columns]
  missing = [c for c in GLUE_AVERAGE_COLUMNS if c not in columns]
  average = {
    'convention': GLUE_AVERAGE_CONVENTION,
    'columns': covered,
    'missing': missing,
    'complete': not missing,
    'median': None,
    'mean': None,
    'reference': None,
    'delta': None,
  }
  if not covered:
    return average
  average['median'] = statistics.fmean(columns[c]['median'] for c in covered)
  average['mean'] = statistics.fmean(columns[c]['mean'] for c in covered)
  references = [columns[c]['reference'] for c in covered]
  if all(r is not None for r in references):
    average['reference'] = statistics.fmean(references)
    average['delta'] = average['median'] - average['reference']
  return average


def build_table(runs: Sequence[Mapping], benchmark: str) -> dict:
  """Aggregates runs of one benchmark into a results table (a JSON-ready dict).

  Args:
    runs: eval.json dicts (from `gather`, or hand-built; 'run_dir' names each in messages).
    benchmark: 'glue', 'squad', 'conll', ...; runs of another benchmark are left out and listed
      under 'ignored'.

  Returns:
    {'benchmark', 'columns': [per-column stats, x100: name, n, median, mean, std, min, max,
    values, seeds, runs, reference, reference_source, delta (median - reference)],
    'average': GLUE average dict (columns covered, missing, complete, median-based 'median',
    mean-based 'mean', reference, delta) or None for other benchmarks, 'sources': distinct
    reference sources, 'ignored', 'skipped', 'warnings'}.

  Raises:
    ValueError: no run of the benchmark, a run breaking the eval.json contract, or runs of one
      column disagreeing on its reference (the message names them).
  """
  per_column: dict[str, list[dict]] = {}
  ignored, warnings = [], []
  for i, run in enumerate(runs):
    run_dir = run.get('run_dir', f'<run {i}>') if isinstance(run, Mapping) else f'<run {i}>'
    _check_run(run, run_dir)
    if run['benchmark'] != benchmark:
      ignored.append({'run': run_dir, 'benchmark': run['benchmark']})
      continue
    reference = run.get('reference') or {'scores': {}, 'source': None}
    for name, score in run['scores'].items():
      per_column.setdefault(name, []).append(
        {
          'score': score,
          'seed': run.get('seed'),
          'run_dir': run_dir,
          'reference': reference['scores'].get(name),
          'source': reference['source'] if name in reference['scores'] else None,
        }
      )
  if not per_column:
    raise ValueError(
      f'no run of benchmark {benchmark!r} among {len(runs)} runs'
      + (f' (benchmarks found: {sorted({r["benchmark"] for r in ignored})})' if ignored else '')
    )
  if ignored:
    log.warning('ignored %d runs of other benchmarks than %r', len(ignored), benchmark)

  columns = {}
  for name in _column_order(list(per_column), benchmark):
    column = _column(name, per_column[name])
    seeds = [s for s in column['seeds'] if s is not None]
    if len(seeds) != len(set(seeds)):
      warnings.append(f'{name}: several runs share a seed ({column["seeds"]}): {column["runs"]}')
    if column['runs_without_reference']:
      warnings.append(f'{name}: runs without a reference: {column["runs_without_reference"]}')
    columns[name] = column
  for warning in warnings:
    log.warning(warning)

  sources = []
  for column in columns.values():
    if column['reference_source'] is not None and column['reference_source'] not in sources:
      sources.append(column['reference_source'])
  return {
    'benchmark': benchmark,
    'columns': list(columns.values()),
    'average': _glue_average(columns) if benchmark == 'glue' else None,
    'sources': sources,
    'ignored': ignored,
    'skipped': list(getattr(runs, 'skipped', [])),
    'warnings': warnings,
  }


def _fmt(value, signed: bool = False) -> str:
  if value is None:
    return '-'
  return f'{value:+.2f}' if signed else f'{value:.2f}'


def to_markdown(table: Mapping) -> str:
  """The table as markdown: one row per column, an Average row (GLUE), then footer notes."""
  lines = [
    f'**{table["benchmark"]}**: median over seeds (ELECTRA protocol), mean ± sample std, x100.',
    '',
    '| Task | n | Median | Mean ± std | Reference | Median - Ref |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  for c in table['columns']:
    spread = _fmt(c['mean']) + ('' if c['std'] is None else f' ± {c["std"]:.2f}')
    lines.append(
      f'| {c["name"]} | {c["n"]} | {_fmt(c["median"])} | {spread} | {_fmt(c["reference"])} '
      f'| {_fmt(c["delta"], signed=True)} |'
    )
  average = table['average']
  notes = []
  if average is not None:
    covered, total = len(average['columns']), len(GLUE_AVERAGE_COLUMNS)
    label = 'Average' if average['complete'] else f'Average (partial, {covered}/{total} tasks)'
    lines.append(
      f'| {label} | | {_fmt(average["median"])} | {_fmt(average["mean"])} (mean-based) '
      f'| {_fmt(average["reference"])} | {_fmt(average["delta"], signed=True)} |'
    )
    notes.append(f'Average: {average["convention"]}.')
    notes.append(f'Averaged: {", ".join(average["columns"]) or "none"}.')
    if average['missing']:
      notes.append(f'Missing from the average: {", ".join(average["missing"])} (partial).')
    by_name = {c['name']: c for c in table['columns']}
    unreferenced = [n for n in average['columns'] if by_name[n]['reference'] is None]
    if unreferenced and len(unreferenced) < len(average['columns']):
      notes.append(f'No reference average: no reference for {", ".join(unreferenced)}.')
  by_source: dict[str, list[str]] = {}
  for c in table['columns']:
    if c['reference_source'] is not None:
      by_source.setdefault(c['reference_source'], []).append(c['name'])
  for source, names in by_source.items():
    notes.append(f'Reference ({", ".join(names)}): {source}.')
  if not by_source:
    notes.append('Reference: none given by the runs.')
  if table['ignored']:
    notes.append(f'Ignored {len(table["ignored"])} runs of other benchmarks.')
  if table['skipped']:
    notes.append(f'Skipped {len(table["skipped"])} directories without eval.json.')
  notes.extend(f'Warning: {w}' for w in table['warnings'])
  return '\n'.join(lines + [''] + notes) + '\n'


def write(table: Mapping, out_prefix: str) -> tuple[str, str]:
  """Writes `<out_prefix>.md` and `<out_prefix>.json`; returns both paths."""
  directory = os.path.dirname(out_prefix)
  if directory:
    os.makedirs(directory, exist_ok=True)
  md_path, json_path = f'{out_prefix}.md', f'{out_prefix}.json'
  with open(md_path, 'w') as f:
    f.write(to_markdown(table))
  with open(json_path, 'w') as f:
    json.dump(table, f, indent=2)
    f.write('\n')
  return md_path, json_path


def main(benchmark: str, pattern: str, out_prefix: str | None = None) -> dict:
  """Gathers the runs matching `pattern`, prints the table, writes it when `out_prefix` is set."""
  table = build_table(gather(pattern), benchmark)
  print(to_markdown(table), end='')
  if out_prefix:
    for path in write(table, out_prefix):
      print(f'wrote {path}')
  return table
