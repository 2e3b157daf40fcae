"""Tests of bench/objectives.py: every objective's host preprocess, timed at tiny size."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import objectives as bench
from bench import throughput

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_finds_every_objective_with_a_preprocess():
  entries = {e['name']: e for e in bench.find_objectives()}
  for name in ('mlm', 'wwm', 'span_masking', 'span_corruption', 'denoising', 'clm', 'word2vec'):
    assert entries[name]['module'] == f'objectives.{name}'
  for helper in ('host_random', 'metrics', 'token_lm', 'word_units', 'seq2seq'):
    assert helper not in entries
  # Each runs with the objective section of a config naming it (its keys, its defaults).
  assert entries['span_corruption']['config'].endswith('configs/cpu/t5.py')
  assert entries['span_masking']['config'].endswith('configs/cpu/spanbert.py')
  assert entries['mlm']['config'].endswith('configs/base.py')


def test_text_rows_are_packed_corpus_text():
  tokenizer = throughput.SyntheticTokenizer(1000)
  stream = np.arange(100, 900, dtype=np.int32)  # A "corpus" whose order is visible.
  rng = np.random.default_rng(0)
  rows = bench.text_rows(rng, 16, 128, tokenizer, ('cls_id', 'sep_id'), stream, 32)
  tokens, segment_ids, positions = rows['tokens'], rows['segment_ids'], rows['positions']
  np.testing.assert_array_equal(rows['example_id'], np.arange(32, 48))
  assert (segment_ids.max(1) > 1).any()  # Several packed segments in some rows.
  real = segment_ids > 0
  assert (tokens[real & (positions == 0)] == tokenizer.cls_id).all()
  last = real & np.pad(
    segment_ids[:, 1:] != segment_ids[:, :-1], ((0, 0), (0, 1)), 'constant', constant_values=True
  )
  assert (tokens[last] == tokenizer.sep_id).all()
  body = real & (positions > 0) & ~last
  assert np.isin(tokens[body], stream).all() and (tokens[~real] == 0).all()
  # Within a segment the text is contiguous (wrapping around the end of the corpus).
  step = (tokens[:, 1:] - tokens[:, :-1]) % len(stream)
  assert (step[body[:, 1:] & body[:, :-1]] == 1).all()


@pytest.mark.slow
def test_runs_every_objective_without_tensorflow(tmp_path):
  """The whole benchmark at tiny size, in a fresh process: no TensorFlow or TFDS imported."""
  out = tmp_path / 'records.json'
  script = (
    'import sys\n'
    'from bench import objectives\n'
    f"objectives.main(['--batch', '4', '--seq-len', '64', '--repeats', '2', '--warmup', '1',"
    f" '--vocab-size', '1000', '--json', {str(out)!r}])\n"
    "loaded = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]\n"
    'assert not loaded, loaded\n'
  )
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.run(
    [sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  records = {r['name']: r for r in json.loads(out.read_text())}
  assert set(records) == {e['name'] for e in bench.find_objectives()}
  for record in records.values():
    assert 'error' not in record, record
    if 'skipped' in record:
      continue
    assert record['tokens_per_s'] > 0 and record['repeats'] == 2 and record['batch'] == 4
    assert record['packed_length'] >= 64
  assert records['span_corruption']['packed_length'] > 64  # T5 packs longer raw rows.
  assert abs(records['mlm']['predicted_fraction'] - 0.15) < 0.1
  assert 'objective' in proc.stdout and 'tokens/s' in proc.stdout  # The table.


def test_unknown_objective_is_named(capsys):
  with pytest.raises(SystemExit):
    bench.main(['--objectives', 'mlm,no_such_objective', '--tokenizer', 'synthetic'])
  assert 'no_such_objective' in capsys.readouterr().err


def test_synthetic_tokenizer_subset(tmp_path):
  records = bench.main(
    ['--objectives', 'mlm,span_masking', '--tokenizer', 'synthetic', '--batch', '2']
    + ['--seq-len', '32', '--repeats', '1', '--json', str(tmp_path / 'r.json')]
  )
  assert [r['name'] for r in records] == ['mlm', 'span_masking']
  assert json.loads((tmp_path / 'r.json').read_text()) == records
