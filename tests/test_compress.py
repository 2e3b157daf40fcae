"""compress.py end to end: a bert-tiny run fine-tuned on a keyword-sentiment SST-2 fixture,
quantized (int8, w4, Q-BERT) and head-pruned into run-like directories that eval.py
evaluates; what OUT holds on disk; OUT written whole or not at all; quantization-aware
training's config."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import base, loading
from configs import glue as glue_config
from data.tokenizers import load_tokenizer
from evaluation import checkpoint_eval
from models.convert import converted
from tests.training import finetune_runs, runs
from tests.training.finetune_runs import tiny
from training import compressed_run, model_setup

_SIZES, _SHAPE = finetune_runs.KEYWORD_SIZES, finetune_runs.KEYWORD_SHAPE


def _compress(*args: str, check: bool = True) -> subprocess.CompletedProcess:
  result = subprocess.run(
    [sys.executable, os.path.join(runs.ROOT, 'compress.py'), *args],
    env=runs.env(),
    cwd=runs.ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  if check and result.returncode != 0:
    raise AssertionError(f'compress.py failed ({result.returncode}):\n{result.stderr[-4000:]}')
  return result


def _evaluate(workdir: str, *overrides: str) -> dict:
  config = loading.load('configs/glue.py:sst2', [*_SHAPE, *overrides])
  return checkpoint_eval.evaluate_checkpoint(config, workdir)


@pytest.fixture(scope='module')
def float_run(keyword_sst2_run):
  """The shared 40-step keyword SST-2 run (tests/conftest.py) and its dev scores."""
  root, run = keyword_sst2_run
  scores = _evaluate(run, *_SIZES)
  assert scores['checkpoint'] == 'best' and scores['scores']['sst2'] >= 0.75, scores
  return root, run, scores


def _block_kernels(params: dict) -> dict:
  blocks = params['encoder']
  return {
    f'{b}/{g}/{m}': leaves['kernel']
    for b in blocks
    if b.startswith('block_')
    for g in ('attention', 'mlp')
    for m, leaves in blocks[b][g].items()
  }


def test_a_run_older_than_a_config_key_reads_with_its_default(keyword_sst2_run, tmp_path):
  """A run's config.json without keys added since (here data.train_per_label and the whole
  adversarial section) reads with today's defaults, and its train batches load."""
  _, run = keyword_sst2_run
  old = str(tmp_path / 'old_run')
  shutil.copytree(run, old)
  with open(os.path.join(old, 'config.json')) as f:
    saved = json.load(f)
  del saved['data']['train_per_label'], saved['adversarial']
  with open(os.path.join(old, 'config.json'), 'w') as f:
    json.dump(saved, f)
  source = compressed_run.read_run(old, base.get_config())
  assert source.config.data.train_per_label == 0 and source.config.adversarial.method == ''
  assert source.config.data.glue_dir == saved['data']['glue_dir']  # Saved values kept.
  batch = compressed_run.train_batches(compressed_run.build_experiment(source), 1)[0]
  assert batch['inputs'].shape == (8, 32)
  with pytest.raises(AttributeError, match='train_per_label'):  # Read as saved: it is missing.
    compressed_run.train_batches(compressed_run.build_experiment(compressed_run.read_run(old)), 1)


@pytest.mark.slow
def test_int8_and_w4_evaluate_like_the_run_and_are_smaller_on_disk(float_run):
  root, run, float_scores = float_run
  source = compressed_run.read_run(run)
  float_kernels = _block_kernels(source.params)
  for method, bound in (('int8', 2 / 64), ('w4', 6 / 64)):
    out = str(root / method)
    _compress('quantize', f'--run={run}', f'--out={out}', f'--method={method}',
              '--calibration_batches=2')  # fmt: skip
    if method == 'int8':  # eval.py itself, as a user runs it: only the config and OUT.
      command = runs.command('eval.py', out, *_SHAPE, config='configs/glue.py:sst2')
      done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
      assert done.returncode == 0, done.stderr[-4000:]
      with open(os.path.join(out, 'eval.json')) as f:
        scores = json.load(f)
    else:
      scores = _evaluate(out)
    assert scores['checkpoint'] == 'compressed' and scores['compression'] == method
    assert scores['step'] == float_scores['step'] and scores['examples'] == {'dev': 64}
    gap = abs(scores['scores']['sst2'] - float_scores['scores']['sst2'])
    assert gap <= bound, (method, scores['scores'], float_scores['scores'])
    saved = converted.load(os.path.join(out, 'model'))  # Digests checked.
    assert saved.config.quant == ('int8' if method == 'int8' else 'weight')
    kernels = _block_kernels(saved.params)
    assert set(kernels) == set(float_kernels) and len(kernels) == 12
    for name, kernel in kernels.items():
      if method == 'int8':
        assert kernel.dtype == np.int8 and kernel.shape == float_kernels[name].shape
      else:  # Two 4-bit weights per byte along the last input axis.
        assert kernel.dtype == np.uint8 and kernel.size * 2 == float_kernels[name].size
    ratio = sum(k.nbytes for k in kernels.values()) / sum(k.nbytes for k in float_kernels.values())
    assert ratio == (0.25 if method == 'int8' else 0.125)
    with open(os.path.join(out, 'compress.json')) as f:
      report = json.load(f)
    sizes = report['sizes']
    assert sizes['param_bytes'] < sizes['source_param_bytes']
    assert sizes['disk_bytes'] < sizes['source_disk_bytes']
    assert report['source'] == {'run': run, 'step': source.step, 'checkpoint': 'best'}
    assert abs(report['train_loss'][method] - report['train_loss']['float']) < 0.05
  result = _compress('quantize', f'--run={run}', f'--out={root / "int8"}', check=False)
  assert result.returncode != 0 and 'exists; pass --overwrite' in result.stderr


@pytest.mark.slow
def test_qbert_prints_eigenvalues_and_bits_within_the_budget(float_run):
  root, run, float_scores = float_run
  out = str(root / 'qbert')
  result = _compress('quantize', f'--run={run}', f'--out={out}', '--method=qbert',
                     '--bits=2,4,8', '--budget=5', '--hessian_batches=2',
                     '--power_iterations=8', '--calibration_batches=2')  # fmt: skip
  assert 'sensitivity' in result.stdout and 'average bits per weight' in result.stdout
  with open(os.path.join(out, 'compress.json')) as f:
    layers = json.load(f)['layers']
  assert [row['layer'] for row in layers] == [0, 1]
  bits = [row['bits'] for row in layers]
  weights = [row['weights'] for row in layers]
  assert all(b in (2, 4, 8) for b in bits)
  assert sum(b * n for b, n in zip(bits, weights, strict=True)) <= 5 * sum(weights)
  for row in layers:
    assert len(row['eigenvalues']) == 2 and row['sensitivity'] > 0
  saved = model_setup.describe(os.path.join(out, 'model')).config
  assert saved.quant_layer_bits == tuple(bits) and saved.quant_group_size == 32  # Head size.
  scores = _evaluate(out)
  assert scores['checkpoint'] == 'compressed' and scores['scores']['sst2'] >= 0.5


@pytest.mark.slow
def test_prune_heads_writes_a_smaller_model_eval_reads(float_run):
  root, run, _ = float_run
  out = str(root / 'pruned')
  _compress('prune-heads', f'--run={run}', f'--out={out}', '--fraction=0.5',
            '--importance_batches=2')  # fmt: skip
  saved = converted.load(os.path.join(out, 'model'))
  assert sum(saved.config.layer_heads) == 2  # Half of 2 layers x 2 heads.
  scores = _evaluate(out)
  assert scores['checkpoint'] == 'compressed' and scores['compression'] == 'prune-heads'


def test_out_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
  vocab = tmp_path / 'vocab.txt'
  vocab.write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n')
  config = tiny(glue_config.get_config('sst2'), str(vocab), tmp_path)
  source = compressed_run.SourceRun(
    str(tmp_path / 'run'), config, None, {'w': np.ones(4, np.float32)}, 7, 'latest', str(vocab)
  )
  monkeypatch.setattr(compressed_run, 'source_disk_bytes', lambda source: 0)
  cfg = model_setup.model_config(config, load_tokenizer(str(vocab)).vocab_size)
  out = str(tmp_path / 'out')
  compressed_run.write(out, source, cfg, {'w': np.zeros(4, np.int8)}, {'method': 'test'})
  assert compressed_run.is_compressed(out)
  with open(os.path.join(out, 'config.json')) as f:
    saved = json.load(f)
  assert saved['init_from'] == os.path.join(out, 'model')
  assert saved['data']['tokenizer_path'] == os.path.join(out, 'model', 'vocab.txt')
  with pytest.raises(FileExistsError, match='exists; pass --overwrite'):
    compressed_run.write(out, source, cfg, {'w': np.ones(4, np.int8)}, {'method': 'test'})

  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # As a kill would stop the write half-way.

  monkeypatch.setattr(converted, 'save', killed)
  with pytest.raises(KeyboardInterrupt):
    compressed_run.write(out, source, cfg, {'w': np.ones(4, np.int8)}, {}, overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ['out', 'vocab.txt']  # No OUT.tmp-* left behind.
  np.testing.assert_array_equal(converted.load(os.path.join(out, 'model')).params['w'], 0)
  monkeypatch.undo()
  monkeypatch.setattr(compressed_run, 'source_disk_bytes', lambda source: 0)
  compressed_run.write(out, source, cfg, {'w': np.ones(4, np.int8)}, {'method': 't'}, True)
  np.testing.assert_array_equal(converted.load(os.path.join(out, 'model')).params['w'], 1)
  assert sorted(os.listdir(tmp_path)) == ['out', 'vocab.txt']


def test_quant_bits_makes_a_quantization_aware_model(spm_path, tmp_path):
  config = tiny(glue_config.get_config('sst2'), spm_path, tmp_path)
  vocab = load_tokenizer(spm_path).vocab_size
  float_cfg = model_setup.model_config(config, vocab)
  assert float_cfg.quant == ''
  config.quant.bits = 4
  cfg = model_setup.model_config(config, vocab)
  assert (cfg.quant, cfg.quant_bits) == ('fake', 4)
  config.quant.bits = 9
  with pytest.raises(ValueError, match='quant.bits=9: quantization-aware training takes 2 to 8'):
    model_setup.model_config(config, vocab)
  # Quantization-aware training starts from a float model, not from a quantized one.
  quantized = str(tmp_path / 'quantized')
  converted.save(
    quantized,
    converted.Converted('compressed', float_cfg.replace(quant='int8'), {'w': np.ones(1)}, []),
  )
  config.quant.bits = 8
  config.init_from = quantized
  for size in ('num_layers', 'd_model', 'num_heads', 'mlp_dim'):
    config.model[size] = None
  with pytest.raises(ValueError, match="already quantized \\(quant='int8'\\)"):
    model_setup.model_config(config, vocab)
  config.quant.bits = 0  # Evaluating the quantized model itself.
  assert model_setup.model_config(config, vocab).quant == 'int8'
