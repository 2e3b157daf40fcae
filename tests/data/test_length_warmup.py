"""Sequence-length warm-up (data/length_warmup.py): the schedule and token counts by hand,
the loader's rows cut before the preprocess and resumed mid-warm-up, a short pretraining
run that logs the lengths and tokens it trained, and the objectives it refuses."""

import itertools
import json
import os

import numpy as np
import pytest

from configs import base, quickstart
from configs import glue as glue_config
from data import sources, tokenizers
from data.length_warmup import LengthWarmup, cut_rows
from data.loader import Loader, ShardSpec
from evaluation import during_training
from objectives import clm
from tests.training import finetune_runs
from training import experiment


def test_schedule_grows_linearly_in_multiples_and_counts_tokens():
  w = LengthWarmup(seq_len=128, steps=10, start=16, multiple=16)
  # start + 112 s / 10 = 16, 27.2, 38.4, 49.6, 60.8, 72, 83.2, 94.4, 105.6, 116.8 -> floor to 16s.
  assert [w.length(s) for s in range(12)] == [16, 16, 32, 48, 48, 64, 80, 80, 96, 112, 128, 128]
  by_hand = sum([16, 16, 32, 48, 48, 64, 80, 80, 96, 112]) + 2 * 128
  assert w.tokens_before(12, batch_size=4) == 4 * by_hand
  assert w.tokens_before(3, batch_size=1) == 16 + 16 + 32
  assert w.tokens_before(0, batch_size=8) == 0
  odd = LengthWarmup(seq_len=100, steps=4, start=10, multiple=32)  # 10, 32.5, 55, 77.5.
  assert [odd.length(s) for s in range(5)] == [10, 32, 32, 64, 100]  # Never below start.
  for bad, message in (({'steps': 0}, 'at least 1 step'), ({'start': 200}, 'between 1 and'),
                       ({'multiple': 0}, 'at least 1')):  # fmt: skip
    with pytest.raises(ValueError, match=message):
      LengthWarmup(**{'seq_len': 128, 'steps': 10, 'start': 16, 'multiple': 16, **bad})


def test_cut_rows_cuts_only_per_token_arrays():
  batch = {'tokens': np.ones((2, 8)), 'label': np.array([0, 1]), 'keys': np.ones((2, 8, 3))}
  cut = cut_rows(batch, 4, 8)
  assert cut['tokens'].shape == (2, 4) and cut['keys'].shape == (2, 4, 3)
  assert cut['label'].tolist() == [0, 1]


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  docs = sources.load_documents(base.get_config().data, 'train')
  prefix = str(tmp_path_factory.mktemp('spm') / 'spm')
  return tokenizers.load_tokenizer(tokenizers.train_sentencepiece(docs, prefix, 1000, 200))


def _loader(tokenizer, warmup):
  config = base.get_config()
  return Loader(
    sources.load_documents(config.data, 'train'), tokenizer,
    shards=ShardSpec.create(4, 2, 0, 1), seq_len=64, framing=clm.FRAMING,
    preprocess=lambda batch: batch, seed=0, train=True, length_warmup=warmup,
  )  # fmt: skip


def test_loader_cuts_the_packed_rows_and_resumes_mid_warmup(tokenizer):
  warmup = LengthWarmup(seq_len=64, steps=6, start=16, multiple=16)
  plain = list(itertools.islice(_loader(tokenizer, None), 8))
  loader = _loader(tokenizer, warmup)
  warmed = list(itertools.islice(loader, 3))
  for b, (short, full) in enumerate(zip(warmed, plain, strict=False)):
    n = warmup.length(b)
    assert short['tokens'].shape == (4, n)
    # The same packed rows, truncated: the rows' first n tokens, segments and positions.
    for key in ('tokens', 'segment_ids', 'positions'):
      np.testing.assert_array_equal(short[key], full[key][:, :n])
  state = json.loads(json.dumps(loader.get_state()))
  assert state['batches'] == 3
  restored = _loader(tokenizer, warmup)
  restored.set_state(state)
  for a, b in zip(itertools.islice(restored, 5), itertools.islice(loader, 5), strict=True):
    assert a['tokens'].shape == b['tokens'].shape
    np.testing.assert_array_equal(a['tokens'], b['tokens'])
  assert b['tokens'].shape == (4, 64)  # Batch 7: past the warm-up.
  no_count = {'shards': state['shards']}
  with pytest.raises(ValueError, match='no batch count'):
    _loader(tokenizer, warmup).set_state(no_count)


def test_pretraining_run_logs_row_lengths_and_tokens(spm_path, tmp_path):
  config = finetune_runs.tiny(quickstart.get_config(), spm_path, tmp_path / 'unused')
  config.seq_len, config.total_steps, config.log_every_steps = 64, 4, 1
  config.eval_every_steps = 0
  config.length_warmup.steps, config.length_warmup.start = 3, 32  # 32, 32, 32+21 -> 32.
  config.length_warmup.multiple = 32
  workdir = str(tmp_path / 'run')
  during_training.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f if '"loss"' in line]
  assert [r['row_length'] for r in logged] == [32, 32, 32, 64]  # Two shapes compiled.
  assert [r['tokens'] for r in logged] == [8 * t for t in (32, 64, 96, 160)]
  assert all(np.isfinite(r['loss']) for r in logged)
  # Seconds per step times tokens per second: that step's tokens (one step a log line).
  for r in logged:
    assert r['tokens_per_sec'] * r['seconds_per_step'] == pytest.approx(8 * r['row_length'])


def test_objectives_with_their_own_rows_refuse_the_warmup(spm_path, tmp_path):
  config = finetune_runs.tiny(glue_config.get_config('sst2'), spm_path, tmp_path)
  finetune_runs.write_sst2(tmp_path, 8, 4)
  config.length_warmup.steps = 4
  exp = experiment.build(config, str(tmp_path / 'run'))
  with pytest.raises(ValueError, match='builds its own rows'):
    exp.loader('train', ShardSpec.create(8, 1, 0, 1))
