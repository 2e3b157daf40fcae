"""The results table over fake fine-tuning runs, every number checked against hand computation."""

import json
import math
import os

import pytest

from evaluation import results_table

BERT = 'Devlin et al. 2019, Table 1, BERT-BASE'


def _run(root, name, task, seed, scores, reference=None, benchmark='glue', source=BERT):
  """Writes `<root>/<name>/eval.json` as eval.py does for one fine-tuning run."""
  run_dir = os.path.join(root, name)
  os.makedirs(run_dir, exist_ok=True)
  record = {
    'step': 400,
    'checkpoint': 'best',
    'objective': 'objectives.classification',
    'benchmark': benchmark,
    'task': task,
    'seed': seed,
    'model': 'bert_base',
    'metrics': {'accuracy': next(iter(scores.values()))},
    'scores': scores,
    'reference': None if reference is None else {'scores': reference, 'source': source},
  }
  with open(os.path.join(run_dir, 'eval.json'), 'w') as f:
    json.dump(record, f)
  return run_dir


def _glue_runs(root, with_cola=True):
  """3 seeds sst2, 2 seeds rte, 3 seeds mnli (m and mm), cola without reference, wnli, extras."""
  for seed, score in enumerate([0.90, 0.92, 0.91]):
    _run(root, f'sst2/seed{seed}', 'sst2', seed, {'sst2': score}, {'sst2': 93.5})
  for seed, score in enumerate([0.70, 0.75]):
    _run(root, f'rte/seed{seed}', 'rte', seed, {'rte': score}, {'rte': 66.4})
  mnli = [(0.84, 0.85), (0.85, 0.86), (0.80, 0.84)]
  for seed, (m, mm) in enumerate(mnli):
    _run(
      root,
      f'mnli/seed{seed}',
      'mnli',
      seed,
      {'mnli_m': m, 'mnli_mm': mm},
      {'mnli_m': 84.6, 'mnli_mm': 83.4},
    )
  if with_cola:
    _run(root, 'cola/seed0', 'cola', 0, {'cola': 0.6})
    _run(root, 'wnli/seed0', 'wnli', 0, {'wnli': 0.5634}, {'wnli': 65.1})
    _run(root, 'custom/seed0', 'custom', 0, {'zeta': 0.5, 'alpha': 0.4})
    _run(root, 'squad/seed0', 'squad', 0, {'squad_em': 0.8, 'squad_f1': 0.88}, benchmark='squad')
    os.makedirs(os.path.join(root, 'crashed/seed0'))  # a run that never wrote eval.json


def _by_name(table):
  return {c['name']: c for c in table['columns']}


def test_glue_table_numbers(tmp_path):
  _glue_runs(str(tmp_path))
  # The recursive pattern finds the same runs; only the leaf without eval.json counts as skipped.
  recursive = results_table.gather(str(tmp_path / '**'))
  assert recursive.skipped == [str(tmp_path / 'crashed' / 'seed0')]
  runs = results_table.gather(str(tmp_path / '*' / 'seed*'))
  assert runs == recursive
  assert runs.skipped == [str(tmp_path / 'crashed' / 'seed0')]
  table = results_table.build_table(runs, 'glue')

  # Leaderboard order, then the unknown names sorted; the squad run is ignored.
  names = [c['name'] for c in table['columns']]
  assert names == ['cola', 'sst2', 'mnli_m', 'mnli_mm', 'rte', 'wnli', 'alpha', 'zeta']
  assert table['ignored'] == [{'run': str(tmp_path / 'squad' / 'seed0'), 'benchmark': 'squad'}]
  assert table['skipped'] == [str(tmp_path / 'crashed' / 'seed0')]

  columns = _by_name(table)
  # (n, median, mean, std, min, max, reference), all x100, by hand.
  expected = {
    'cola': (1, 60.0, 60.0, None, 60.0, 60.0, None),
    'sst2': (3, 91.0, 91.0, 1.0, 90.0, 92.0, 93.5),
    'mnli_m': (3, 84.0, 83.0, math.sqrt(7), 80.0, 85.0, 84.6),
    'mnli_mm': (3, 85.0, 85.0, 1.0, 84.0, 86.0, 83.4),
    'rte': (2, 72.5, 72.5, math.sqrt(12.5), 70.0, 75.0, 66.4),
    'wnli': (1, 56.34, 56.34, None, 56.34, 56.34, 65.1),
    'alpha': (1, 40.0, 40.0, None, 40.0, 40.0, None),
    'zeta': (1, 50.0, 50.0, None, 50.0, 50.0, None),
  }
  for name, (n, median, mean, std, low, high, reference) in expected.items():
    c = columns[name]
    assert c['n'] == n, name
    assert c['median'] == pytest.approx(median), name
    assert c['mean'] == pytest.approx(mean), name
    assert c['std'] == (None if std is None else pytest.approx(std)), name
    assert (c['min'], c['max']) == (pytest.approx(low), pytest.approx(high)), name
    assert c['reference'] == reference, name
    if reference is None:
      assert c['reference_source'] is None and c['delta'] is None
    else:
      assert c['reference_source'] == BERT
      assert c['delta'] == pytest.approx(median - reference), name
  assert columns['sst2']['seeds'] == [0, 1, 2]
  assert columns['sst2']['runs'] == [str(tmp_path / 'sst2' / f'seed{s}') for s in range(3)]
  assert columns['mnli_mm']['runs'] == [str(tmp_path / 'mnli' / f'seed{s}') for s in range(3)]

  # Average over the 4 of 8 standard tasks present; wnli and the unknown columns stay out.
  average = table['average']
  assert average['columns'] == ['cola', 'sst2', 'mnli_m', 'rte']
  assert average['missing'] == ['mrpc', 'stsb', 'qqp', 'qnli']
  assert average['complete'] is False
  assert average['median'] == pytest.approx((60 + 91 + 84 + 72.5) / 4)
  assert average['mean'] == pytest.approx((60 + 91 + 83 + 72.5) / 4)
  # cola has no reference, so no reference average (it would cover other tasks than the runs').
  assert average['reference'] is None and average['delta'] is None
  assert table['sources'] == [BERT]
  assert 'wnli and ax excluded' in average['convention']


def test_reference_average_when_every_averaged_task_has_one(tmp_path):
  _glue_runs(str(tmp_path), with_cola=False)
  table = results_table.build_table(results_table.gather(str(tmp_path / '**')), 'glue')
  # '**' also matches the folders holding runs (tmp_path, sst2/, ...): those are not skipped runs.
  assert table['skipped'] == []
  average = table['average']
  assert average['columns'] == ['sst2', 'mnli_m', 'rte']
  assert average['median'] == pytest.approx((91 + 84 + 72.5) / 3)
  assert average['reference'] == pytest.approx((93.5 + 84.6 + 66.4) / 3)
  assert average['delta'] == pytest.approx((91 + 84 + 72.5 - 93.5 - 84.6 - 66.4) / 3)


def test_full_glue_average_is_complete(tmp_path):
  for task in results_table.GLUE_AVERAGE_COLUMNS:
    scores = {'mnli_m': 0.8, 'mnli_mm': 0.2} if task == 'mnli_m' else {task: 0.5}
    _run(str(tmp_path), task, task, 0, scores)
  table = results_table.build_table(results_table.gather(str(tmp_path / '*')), 'glue')
  average = table['average']
  assert average['complete'] is True and average['missing'] == []
  # mnli_mm (20) does not enter: 7 tasks at 50 and mnli_m at 80.
  assert average['median'] == pytest.approx((7 * 50 + 80) / 8)
  markdown = results_table.to_markdown(table)
  assert '| Average | | 53.75 | 53.75 (mean-based) | - | - |' in markdown
  assert 'Missing from the average' not in markdown


def test_markdown_rows_and_footer(tmp_path):
  _glue_runs(str(tmp_path))
  table = results_table.build_table(results_table.gather(str(tmp_path / '*' / 'seed*')), 'glue')
  markdown = results_table.to_markdown(table)
  lines = markdown.splitlines()
  assert '| Task | n | Median | Mean ± std | Reference | Median - Ref |' in lines
  assert '| sst2 | 3 | 91.00 | 91.00 ± 1.00 | 93.50 | -2.50 |' in lines
  assert '| mnli_m | 3 | 84.00 | 83.00 ± 2.65 | 84.60 | -0.60 |' in lines
  assert '| rte | 2 | 72.50 | 72.50 ± 3.54 | 66.40 | +6.10 |' in lines
  assert '| cola | 1 | 60.00 | 60.00 | - | - |' in lines
  assert '| Average (partial, 4/8 tasks) | | 76.88 | 76.62 (mean-based) | - | - |' in lines
  assert f'Reference (sst2, mnli_m, mnli_mm, rte, wnli): {BERT}.' in lines
  assert 'Averaged: cola, sst2, mnli_m, rte.' in lines
  assert 'Missing from the average: mrpc, stsb, qqp, qnli (partial).' in lines
  assert 'No reference average: no reference for cola.' in lines
  assert 'Ignored 1 runs of other benchmarks.' in lines
  assert 'Skipped 1 directories without eval.json.' in lines
  # The table rows come in column order, the Average row last.
  rows = [line.split(' | ')[0].lstrip('| ') for line in lines if line.startswith('| ')]
  assert rows[1:] == ['cola', 'sst2', 'mnli_m', 'mnli_mm', 'rte', 'wnli', 'alpha', 'zeta'] + [
    'Average (partial, 4/8 tasks)'
  ]


def test_other_benchmark_first_seen_columns_and_no_average(tmp_path):
  squad = {'squad_em': 0.8, 'squad_f1': 0.9}
  _run(str(tmp_path), 's0', 'squad', 0, squad, {'squad_em': 80.8, 'squad_f1': 88.5}, 'squad')
  _run(str(tmp_path), 's1', 'squad', 1, {'squad_em': 0.82, 'squad_f1': 0.9}, None, 'squad')
  _run(str(tmp_path), 'g0', 'sst2', 0, {'sst2': 0.9})
  table = results_table.build_table(results_table.gather(str(tmp_path / '*')), 'squad')
  assert [c['name'] for c in table['columns']] == ['squad_em', 'squad_f1']
  assert table['average'] is None
  em = _by_name(table)['squad_em']
  assert em['median'] == pytest.approx(81.0) and em['reference'] == 80.8
  # s1 gave no reference: it does not conflict, but the table says so.
  assert any('runs without a reference' in w for w in table['warnings'])
  markdown = results_table.to_markdown(table)
  assert 'Average' not in markdown
  assert '| squad_f1 | 2 | 90.00 | 90.00 ± 0.00 | 88.50 | +1.50 |' in markdown


def test_write_and_main(tmp_path, capsys):
  _glue_runs(str(tmp_path / 'runs'))
  pattern = str(tmp_path / 'runs' / '*' / 'seed*')
  table = results_table.main('glue', pattern, None)
  printed = capsys.readouterr().out
  assert '| sst2 | 3 | 91.00 |' in printed
  assert not list((tmp_path).glob('*.md'))  # no out_prefix: nothing written

  out = tmp_path / 'tables' / 'glue'
  results_table.main('glue', pattern, str(out))
  assert (tmp_path / 'tables' / 'glue.md').read_text() == results_table.to_markdown(table)
  assert json.loads((tmp_path / 'tables' / 'glue.json').read_text()) == table


def test_malformed_eval_json_names_the_file(tmp_path):
  _run(str(tmp_path), 'good', 'sst2', 0, {'sst2': 0.9})
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'eval.json').write_text('{"benchmark": "glue", "scores": ')
  with pytest.raises(ValueError, match=r'bad/eval.json: malformed'):
    results_table.gather(str(tmp_path / '*'))
  (bad / 'eval.json').write_text(json.dumps({'benchmark': 'glue', 'seed': 0}))
  with pytest.raises(ValueError, match=r'bad/eval.json: "scores"'):
    results_table.gather(str(tmp_path / '*'))
  # A percentage where a fraction belongs would be shown x100 twice.
  (bad / 'eval.json').write_text(json.dumps({'benchmark': 'glue', 'scores': {'sst2': 91.0}}))
  with pytest.raises(ValueError, match=r'bad/eval.json: score .sst2. = 91.0 is not a fraction'):
    results_table.gather(str(tmp_path / '*'))


def test_conflicting_references_name_the_runs(tmp_path):
  _run(str(tmp_path), 'a', 'sst2', 0, {'sst2': 0.9}, {'sst2': 93.5})
  _run(str(tmp_path), 'b', 'sst2', 1, {'sst2': 0.9}, {'sst2': 95.0}, source='Clark et al. 2020')
  runs = results_table.gather(str(tmp_path / '*'))
  with pytest.raises(ValueError, match="'sst2' disagree") as error:
    results_table.build_table(runs, 'glue')
  assert str(tmp_path / 'a') in str(error.value) and str(tmp_path / 'b') in str(error.value)
  # Same value from another source is a disagreement too: the footer could name only one.
  _run(str(tmp_path), 'b', 'sst2', 1, {'sst2': 0.9}, {'sst2': 93.5}, source='Clark et al. 2020')
  with pytest.raises(ValueError, match='disagree'):
    results_table.build_table(results_table.gather(str(tmp_path / '*')), 'glue')


def test_no_match_and_no_run_of_the_benchmark(tmp_path):
  with pytest.raises(FileNotFoundError, match='no run directory matches'):
    results_table.gather(str(tmp_path / 'nothing*'))
  _run(str(tmp_path), 'squad', 'squad', 0, {'squad_f1': 0.9}, benchmark='squad')
  with pytest.raises(ValueError, match=r"no run of benchmark 'glue'.*\['squad'\]"):
    results_table.build_table(results_table.gather(str(tmp_path / '*')), 'glue')


def test_duplicate_seeds_warn(tmp_path):
  _run(str(tmp_path), 'a', 'sst2', 0, {'sst2': 0.9})
  _run(str(tmp_path), 'b', 'sst2', 0, {'sst2': 0.8})
  table = results_table.build_table(results_table.gather(str(tmp_path / '*')), 'glue')
  assert any('share a seed' in w for w in table['warnings'])
  assert _by_name(table)['sst2']['median'] == pytest.approx(85.0)


def test_eval_py_table_command(tmp_path):
  """The command line: `eval.py --table glue --runs PATTERN --out PREFIX`."""
  import subprocess
  import sys

  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  _glue_runs(str(tmp_path / 'runs'))
  out = str(tmp_path / 'table')
  result = subprocess.run(
    [sys.executable, os.path.join(root, 'eval.py'), '--table=glue',
     f'--runs={tmp_path}/runs/*/seed*', f'--out={out}'],
    capture_output=True, text=True, cwd=root, timeout=120,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| sst2 | 3 | 91.00 |' in result.stdout
  with open(out + '.json') as f:
    table = json.load(f)
  assert _by_name(table)['rte']['median'] == pytest.approx(72.5)
  assert os.path.exists(out + '.md')
