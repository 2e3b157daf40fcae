"""bench/attention_check.py: its CPU smoke mode runs, and it imports no TensorFlow, Grain
or ml_collections (it is meant for a bare GPU machine)."""

import json
import os
import subprocess
import sys

from bench import attention_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_smoke_compares_and_writes_json(tmp_path, capsys):
  path = tmp_path / 'attention.json'
  records = attention_check.main(['--smoke', '--impl', 'xla', '--json', str(path)])
  assert [r['case'] for r in records] == ['bidirectional', 'causal', 'bias']
  assert all(r['passed'] and r['max_abs_diff_out'] == 0.0 for r in records)
  assert json.loads(path.read_text()) == records
  assert 'max_abs_diff_dq' in capsys.readouterr().out


def test_packed_rows_have_documents_and_padding():
  segments = attention_check.packed_segments(8, 128, seed=0)
  assert segments.max() >= 3 and (segments == 0).any() and (segments[:, 0] == 1).all()


def test_imports_no_tensorflow_grain_or_ml_collections():
  code = (
    'import sys, bench.attention_check; '
    "print(sorted({m.split('.')[0] for m in sys.modules} & "
    "{'tensorflow', 'tensorflow_datasets', 'grain', 'ml_collections'}))"
  )
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(
    [sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, check=True
  )
  assert result.stdout.strip() == '[]', result.stdout
