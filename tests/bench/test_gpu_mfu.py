"""Tests of bench/gpu_mfu.py and bench/gpu.sh (on CPU: --smoke, cuDNN unavailable).

The script tests run in a subprocess whose `sitecustomize` refuses to import
TensorFlow, TFDS, Grain and ml_collections, none of which a bare GPU image has.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bench import gpu_mfu
from models import flops

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'grain', 'ml_collections')

_SITECUSTOMIZE = f"""
import sys

_BLOCKED = frozenset({BLOCKED!r})


class _Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] in _BLOCKED:
      raise ImportError(f'{{name}} is blocked: the GPU benchmarks must not import it')
    return None


sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture(scope='module')
def bare_env(tmp_path_factory):
  """Environment whose Python cannot import TF, TFDS, Grain or ml_collections."""
  site = tmp_path_factory.mktemp('blocker')
  (site / 'sitecustomize.py').write_text(textwrap.dedent(_SITECUSTOMIZE))
  env = dict(os.environ)  # Keeps conftest's CPU devices and XLA flags.
  env['PYTHONPATH'] = os.pathsep.join([str(site), REPO])
  env['PYTHON'] = sys.executable
  return env


def test_the_sweep_imports_nothing_a_bare_gpu_image_lacks(bare_env):
  blocked = subprocess.run(
    [sys.executable, '-c', 'import ml_collections'], env=bare_env, capture_output=True, text=True
  )
  assert blocked.returncode != 0 and 'is blocked' in blocked.stderr  # The blocker works.
  proc = subprocess.run(
    [sys.executable, '-c', 'import bench.gpu_mfu, bench.attention_check'],
    env=bare_env,
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_cases_cover_the_issue_and_count_their_flops():
  cases = {c.name: c for c in gpu_mfu.CASES}
  assert set(cases) == {
    'bert-large-512', 'gpt2-medium-1024', 'gpt2-xl-width-1024', 'gpt2-xl-width-2048',
    't5-base-512',
  }  # fmt: skip
  xl = gpu_mfu.model_config(cases['gpt2-xl-width-2048'], 'cudnn', 'bfloat16')
  assert (xl.d_model, xl.num_heads, xl.mlp_dim, xl.num_layers) == (1600, 25, 6400, 12)
  assert xl.max_len == 2048 and xl.attention_impl == 'cudnn' and xl.dtype == 'bfloat16'
  assert xl.dropout_rate == xl.attention_dropout_rate == 0.0 and xl.scan_layers
  bert = gpu_mfu.model_config(cases['bert-large-512'], 'xla', 'bfloat16')
  model, _ = gpu_mfu.build_model(cases['bert-large-512'], bert)
  gathered = flops.model_flops_per_token(model, bert, 512, predicted_len=80)
  assert gathered < flops.model_flops_per_token(model, bert, 512)  # Only 80 of 512 projected.
  t5 = gpu_mfu.model_config(cases['t5-base-512'], 'xla', 'bfloat16')
  assert t5.num_decoder_layers == 12 and t5.activation_dropout_rate == 0.0


def test_synthetic_batches_have_each_objectives_shapes():
  mlm, clm, _, _, span = (gpu_mfu.smoke_case(c) for c in gpu_mfu.CASES)
  rows = mlm.batch_size
  batch = gpu_mfu.host_batches(mlm, 512, 1, seed=0)[0]
  assert batch['masked_positions'].shape == (rows, 8) and batch['inputs'].shape == (rows, 32)
  assert batch['masked_weights'].sum() == batch['weights'].sum() > 0
  batch = gpu_mfu.host_batches(clm, 512, 1, seed=0)[0]
  assert batch['targets'].shape == (rows, 64) and 'masked_positions' not in batch
  batch = gpu_mfu.host_batches(span, 512, 1, seed=0)[0]
  assert batch['inputs'].shape == (rows, 32) and batch['decoder_inputs'].shape == (rows, 16)
  for encoder, decoder in zip(batch['segment_ids'], batch['decoder_segment_ids'], strict=True):
    assert set(np.unique(decoder)) - {0} == set(np.unique(encoder)) - {0}  # Pairs kept.
    assert (np.diff(decoder[decoder > 0]) >= 0).all()
  assert (batch['weights'] == (batch['decoder_segment_ids'] > 0)).all()


def test_peak_flops_come_from_the_datasheet_or_a_measurement():
  assert gpu_mfu.datasheet_peak('NVIDIA H100 80GB HBM3') == (989e12, 'H100')
  assert gpu_mfu.datasheet_peak('NVIDIA H100 PCIe') == (756e12, 'H100 PCIe')
  assert gpu_mfu.datasheet_peak('NVIDIA H200') == (989e12, 'H200')
  assert gpu_mfu.datasheet_peak('NVIDIA H200 NVL') == (835e12, 'H200 NVL')
  assert gpu_mfu.datasheet_peak('cpu') is None
  assert gpu_mfu.peak_flops(1e12) == (1e12, 'configured --peak_flops')


def test_an_implementation_that_cannot_run_here_is_reported_not_raised():
  case = gpu_mfu.smoke_case(gpu_mfu.CASES[1])
  (record,) = gpu_mfu.run_case(case, ['cudnn'], dtype='bfloat16', peak=1e11, warmup=0,
                               repeats=1, steps=1)  # fmt: skip
  assert record['status'].startswith('unavailable: ')
  assert "attention_impl='cudnn'" in record['status']


@pytest.mark.slow
def test_gpu_sh_smoke_runs_on_cpu_and_prints_its_tables(bare_env, tmp_path):
  # One device, as on one GPU; conftest's fusion emitters (gpu.sh adds -O0 itself).
  one_device = dict(bare_env, XLA_FLAGS='--xla_cpu_use_fusion_emitters=false')
  proc = subprocess.run(
    ['bash', 'bench/gpu.sh', '--smoke', '--out', str(tmp_path)],
    env=one_device,
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  start = lines.index('== MFU per attention implementation (bench/gpu_mfu.py) ==') + 1
  header = [c.strip() for c in lines[start].split('|')]
  assert header[:4] == ['case', 'impl', 'layers x d_model', 'batch x seq']
  assert header[-3:] == ['MFU', 'step memory', 'x xla']
  rows = [[c.strip() for c in line.split('|')] for line in lines[start + 2 : start + 12]]
  assert [(r[0], r[1]) for r in rows] == [
    (case.name, impl) for case in gpu_mfu.CASES for impl in ('xla', 'cudnn')
  ]
  for row in rows:
    if row[1] == 'xla':
      assert float(row[6]) > 0 and row[9].endswith('%')  # Step ms and MFU.
    else:
      assert row[6] == 'unavailable'  # cuDNN on a CPU.
  records = json.loads((tmp_path / 'gpu_mfu.json').read_text())
  assert len(records) == 10
  assert all(r['status'] == 'ok' for r in records if r['impl'] == 'xla')
  assert all(0 < r['mfu'] < 1 for r in records if r['impl'] == 'xla')
  check = json.loads((tmp_path / 'attention_check.json').read_text())
  assert [r['case'] for r in check] == ['bidirectional', 'causal', 'bias']
  assert all(r['passed'] for r in check)
  assert 'Packed rows: fused attention vs the XLA reference' in proc.stdout
  assert f'Results in {tmp_path} (exit status 0)' in proc.stdout
