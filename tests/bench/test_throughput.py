"""Tests of bench/throughput.py.

The end-to-end tests run the benchmark in a subprocess whose `sitecustomize`
refuses to import TensorFlow, TFDS and Grain, as on the bare accelerator machine
the benchmark is meant for.
"""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import hf_reference, step_timing, throughput
from configs import base
from models import presets
from objectives import clm, mlm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'grain')

_SITECUSTOMIZE = f"""
import sys

_BLOCKED = frozenset({BLOCKED!r})


class _Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] in _BLOCKED:
      raise ImportError(f'{{name}} is blocked: the benchmark must not import it')
    return None


sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture(scope='module')
def blocked_env(tmp_path_factory):
  """Environment whose Python cannot import TF, TFDS or Grain."""
  site = tmp_path_factory.mktemp('blocker')
  (site / 'sitecustomize.py').write_text(textwrap.dedent(_SITECUSTOMIZE))
  env = dict(os.environ)  # Keeps conftest's 8 CPU devices.
  env['PYTHONPATH'] = os.pathsep.join([str(site), REPO])
  return env


@pytest.mark.parametrize('module', BLOCKED)
def test_blocker_refuses_imports(blocked_env, module):
  proc = subprocess.run(
    [sys.executable, '-c', f'import {module}'],
    env=blocked_env,
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert proc.returncode != 0
  assert 'is blocked' in proc.stderr


@pytest.mark.parametrize(
  'preset, overrides',
  [
    ('bert-tiny', ['--config.peak_flops_per_device=1e11']),
    ('gpt2-tiny', ['--config.objective.module=objectives.clm', '--config.model.dropout_rate=0.0']),
  ],
)
@pytest.mark.slow
def test_benchmark_runs_without_tensorflow(blocked_env, tmp_path, preset, overrides):
  out = tmp_path / 'record.json'
  cmd = [sys.executable, '-m', 'bench.throughput', '--config', 'configs/quickstart.py']
  cmd += [f'--config.model.preset={preset}', '--config.seq_len=32', '--config.batch_size=8']
  cmd += overrides + ['--steps', '2', '--warmup', '1', '--json', str(out)]
  proc = subprocess.run(cmd, env=blocked_env, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  assert (
    lines[0].split()
    == (
      'preset | params | devices | batch | seq_len | dtype | compile s | step ms | tokens/s'
      ' | MFU | peak mem'
    ).split()
  )
  record = json.loads('\n'.join(lines[lines.index('{') :]))
  assert record == json.loads(out.read_text())
  assert record['preset'] == preset
  assert record['tokens_per_s'] > 0 and record['step_time_ms'] > 0 and record['compile_s'] > 0
  assert record['tokens_per_s'] == pytest.approx(8 * 32 / (record['step_time_ms'] / 1e3))
  assert record['params'] == _trained_params(preset, record['objective'])
  assert record['devices'] == 8 and record['batch_size'] == 8 and record['seq_len'] == 32
  assert 0 < record['mfu'] < 1 and record['peak_memory_bytes'] > 0
  assert np.isfinite(record['final_loss'])
  if preset == 'bert-tiny':
    assert record['peak_flops_per_device'] == 1e11
    assert record['peak_flops_source'] == 'configured peak_flops_per_device'
    assert 0.08 < record['predicted_fraction'] < 0.16  # 15% of the non-framing tokens.
  else:
    assert record['peak_flops_source'] == 'measured float32 matmul peak'
    assert record['predicted_fraction'] > 0.8  # Every next token within a segment.


def test_synthetic_rows_are_packed_like_the_loader():
  rng = np.random.default_rng(0)
  rows = throughput.synthetic_rows(
    rng, 256, 128, vocab_size=1000, prefix_id=4, suffix_id=5, first_ordinary_id=7
  )
  tokens, segment_ids, positions = rows['tokens'], rows['segment_ids'], rows['positions']
  assert tokens.shape == segment_ids.shape == positions.shape == (256, 128)
  counts = segment_ids.max(1)
  assert set(np.unique(counts)) == {1, 2, 3, 4}
  real = segment_ids > 0
  assert real.sum(1).min() >= 128 - 7 and real[:, 0].all()
  assert (np.diff(segment_ids, axis=1) >= 0)[real[:, 1:]].all()  # Contiguous segments...
  assert (np.diff(segment_ids, axis=1) <= 1).all()  # ...numbered 1, 2, ... with no gap.
  starts = real & (positions == 0)
  assert (starts.sum(1) == counts).all()
  assert (tokens[starts] == 4).all()
  ends = real & np.concatenate([segment_ids[:, 1:] != segment_ids[:, :-1], real[:, -1:]], 1)
  assert (tokens[ends] == 5).all() and ends.sum() == starts.sum()
  middle = real & ~starts & ~ends
  assert tokens[middle].min() >= 7 and tokens[middle].max() < 1000
  assert (tokens[~real] == 0).all() and (positions[~real] == 0).all()
  lengths = [np.bincount(row[row > 0])[1:] for row in segment_ids]
  assert min(x.min() for x in lengths) >= 8
  for row_pos, row_seg in zip(positions[:8], segment_ids[:8], strict=True):
    for s in range(1, row_seg.max() + 1):
      np.testing.assert_array_equal(row_pos[row_seg == s], np.arange((row_seg == s).sum()))


def test_synthetic_mlm_batches_mask_fifteen_percent():
  config = base.get_config()
  config.seq_len = 128
  batches = throughput.synthetic_batches(config, mlm, 30522, num=4, rows=64)
  weights = np.concatenate([b['weights'] for b in batches])
  inputs = np.concatenate([b['inputs'] for b in batches])
  targets = np.concatenate([b['targets'] for b in batches])
  candidates = (targets >= 7).sum()  # 32k candidates: sd of the rate is 0.002.
  assert weights.sum() / candidates == pytest.approx(0.15, abs=0.01)
  masked = (inputs == throughput.SyntheticTokenizer.mask_id).sum() / weights.sum()
  assert masked == pytest.approx(0.8, abs=0.03)
  assert (weights[targets < 7] == 0).all()
  clm_batch = throughput.synthetic_batches(config, clm, 50257, num=1, rows=4)[0]
  assert set(clm_batch) == {'inputs', 'targets', 'weights', 'segment_ids', 'positions'}
  starts = (clm_batch['positions'] == 0) & (clm_batch['segment_ids'] > 0)
  assert (clm_batch['inputs'][starts] == 2).all()  # BOS opens every segment.


def _trained_params(preset: str, objective_module: str) -> int:
  """Parameters of the model the objective trains (the backbone count plus its head)."""
  cfg = presets.get_config(preset)
  model = importlib.import_module(objective_module).build_model(cfg)
  tokens = jnp.ones((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens))
  count = sum(x.size for x in jax.tree.leaves(shapes))
  assert count >= presets.count_params(cfg)  # A pretraining head comes on top of the backbone.
  return count


def test_interleaved_rotates_the_order_and_times_every_round():
  calls = []
  runners = {name: (lambda name=name: calls.append(name)) for name in 'abc'}
  times = step_timing.interleaved(runners, warmup=1, repeats=3, steps=2)
  assert calls[:3] == ['a', 'b', 'c']  # Warm-up, then rounds in rotated order.
  rounds = calls[3:]
  assert rounds == [
    'a',
    'a',
    'b',
    'b',
    'c',
    'c',
    'b',
    'b',
    'c',
    'c',
    'a',
    'a',
    'c',
    'c',
    'a',
    'a',
    'b',
    'b',
  ]
  assert set(times) == {'a', 'b', 'c'} and all(len(t) == 3 for t in times.values())
  assert step_timing.round_ratios([2.0, 6.0], [1.0, 2.0]) == [2.0, 3.0]
  assert step_timing.spread([3.0, 1.0, 2.0]) == {'median': 2.0, 'min': 1.0, 'max': 3.0}
  with pytest.raises(ValueError, match='repeats=0'):
    step_timing.interleaved(runners, warmup=0, repeats=0, steps=1)


def _without_versions(config) -> dict:
  return {k: v for k, v in config.to_dict().items() if k != 'transformers_version'}


def test_hf_configs_of_the_base_presets_are_the_hf_defaults():
  transformers = pytest.importorskip('transformers')
  no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  bert = hf_reference.hf_config(presets.get_config('bert-base'))
  assert _without_versions(bert) == _without_versions(transformers.BertConfig(**no_dropout))
  gpt2 = hf_reference.hf_config(presets.get_config('gpt2-small'))
  no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
  assert _without_versions(gpt2) == _without_versions(transformers.GPT2Config(**no_dropout))
  assert hf_reference.hf_config(presets.get_config('bert-tiny')).hidden_size == 128


@pytest.mark.parametrize('preset', ['t5-small', 'bart-base', 'albert-base', 'roberta-base'])
def test_hf_reference_refuses_other_families(preset):
  with pytest.raises(ValueError, match='neither'):
    hf_reference.family(presets.get_config(preset))


def test_compare_refuses_overriding_what_it_sets():
  with pytest.raises(ValueError, match='sets --config.model.preset itself'):
    throughput.compare_config('configs/base.py', 'bert-tiny', ['--config.model.preset=bert-base'])
  config = throughput.compare_config('configs/base.py', 'gpt2-tiny', ['--config.seq_len=64'])
  assert (config.objective.module, config.model.dropout_rate) == ('objectives.clm', 0.0)
  assert (config.batch_size, config.seq_len) == (8, 64)  # The comparison's default batch.
  all_positions = throughput.compare_config('configs/base.py', 'bert-tiny', [], all_positions=True)
  assert all_positions.objective.max_predictions_per_seq == -1


@pytest.mark.slow
def test_compare_hf_times_ours_and_hf_side_by_side(tmp_path, capsys):
  pytest.importorskip('transformers')
  out = tmp_path / 'compare.json'
  argv = ['--compare', 'hf', '--models', 'bert-tiny,gpt2-tiny', '--config.seq_len=32']
  argv += ['--repeats', '2', '--steps', '1', '--warmup', '0', '--json', str(out)]
  result = throughput.main(argv)
  lines = capsys.readouterr().out.splitlines()
  assert [c.strip() for c in lines[0].split('|')][:3] == ['model', 'runner', 'predicted/row']
  assert result == json.loads(out.read_text())
  assert (result['batch_size'], result['seq_len'], result['dtype']) == (8, 32, 'float32')
  runners = {(r['model'], r['runner']): r for r in result['runners']}
  assert list(runners) == [
    ('bert-tiny', 'ours (gathered)'),
    ('bert-tiny', 'ours (all positions)'),
    ('bert-tiny', 'hf'),
    ('gpt2-tiny', 'ours'),
    ('gpt2-tiny', 'hf'),
  ]
  gathered, every, hf = (
    runners['bert-tiny', n] for n in ('ours (gathered)', 'ours (all positions)', 'hf')
  )
  assert gathered['params'] == every['params'] == hf['params']  # The same model, both sides.
  assert runners['gpt2-tiny', 'ours']['params'] == runners['gpt2-tiny', 'hf']['params']
  assert gathered['predicted_len'] == 14 and every['predicted_len'] == hf['predicted_len'] == 32
  # The same work at every position (XLA's count), less with the gathered head. Ours also
  # selects between the updated and the previous state (the non-finite guard,
  # training/state.py): a few elementwise operations per parameter, 5% of this tiny step.
  assert hf['xla_flops_per_step'] < every['xla_flops_per_step'] < 1.08 * hf['xla_flops_per_step']
  assert gathered['xla_flops_per_step'] < 0.7 * every['xla_flops_per_step']
  assert gathered['flops_per_token'] < every['flops_per_token'] == hf['flops_per_token']
  for record in result['runners']:
    assert len(record['step_ms_rounds']) == 2 and record['tokens_per_s'] > 0
    assert record['step_ms']['min'] <= record['step_ms']['median'] <= record['step_ms']['max']
    assert 0 < record['mfu'] and np.isfinite(record['final_loss'])
    if record['side'] == 'ours':
      assert record['x_hf']['median'] > 0 and len(record['x_hf_rounds']) == 2
      theirs = runners[record['model'], 'hf']['xla_flops_per_step']
      assert record['x_hf_by_flops'] == pytest.approx(theirs / record['xla_flops_per_step'])
    else:
      assert 'x_hf' not in record
