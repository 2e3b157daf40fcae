"""Lifelong learning: the score matrix's average, forgetting and backward transfer by hand
(evaluation/lifelong.py), and `python -m tools.lifelong` over two tiny tasks: each stage
trains on its task's records only (plus the replayed ones), starts from the stage before,
and a second invocation trains nothing again."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import mtdnn as mtdnn_config
from data import tasks
from evaluation import lifelong
from tests.training import finetune_runs, runs
from tests.training.test_mtdnn import write_rte
from tools import lifelong as lifelong_tool


def test_forgetting_and_transfer_by_hand():
  stages = [{'a': 0.80, 'b': 0.50, 'c': 0.40}, {'a': 0.70, 'b': 0.90, 'c': 0.45},
            {'a': 0.75, 'b': 0.60, 'c': 0.85}]  # fmt: skip
  m = lifelong.score_matrix(stages, ['a', 'b', 'c'])
  np.testing.assert_allclose(m[1], [70, 90, 45])
  figures = lifelong.summary(m)
  assert figures['average'] == pytest.approx((75 + 60 + 85) / 3)
  # a: best before the end 80 (stage 0), final 75 -> 5; b: best 90, final 60 -> 30.
  assert figures['forgetting'] == pytest.approx((5 + 30) / 2)
  # a: 75 - 80; b: 60 - 90.
  assert figures['backward_transfer'] == pytest.approx((-5 - 30) / 2)
  one = lifelong.score_matrix(stages[:1], ['a', 'b', 'c'])
  assert lifelong.forgetting(one) == 0.0 == lifelong.backward_transfer(one)
  assert '| b | 70.00 | 90.00 | 45.00 |' in lifelong.matrix_table('naive', m[:2], ['a', 'b', 'c'])


def test_rehearsal_mixes_the_earlier_tasks_replayed_records():
  by_task = [np.arange(0, 10), np.arange(10, 16), np.arange(16, 20)]
  replay = [np.array([1, 4]), np.array([12]), np.array([17])]
  np.testing.assert_array_equal(
    lifelong_tool.stage_positions('naive', 2, by_task, replay), by_task[2]
  )
  np.testing.assert_array_equal(
    lifelong_tool.stage_positions('ewc', 1, by_task, replay), by_task[1]
  )
  mixed = lifelong_tool.stage_positions('rehearsal', 2, by_task, replay)
  assert sorted(mixed.tolist()) == [1, 4, 12, 16, 17, 18, 19]  # Task 2's and 0's, 1's replay.


def _stage0_scores(work) -> list[float]:
  with open(work / 'stage0' / 'run' / 'eval.json') as f:
    scores = json.load(f)['scores']
  return [scores['sst2'], scores['rte']]


@pytest.mark.slow
def test_lifelong_stages_end_to_end(spm_path, tmp_path):
  glue = tmp_path / 'glue'
  finetune_runs.write_sst2(glue, 24, 8)
  write_rte(glue, 16, 8)
  work = tmp_path / 'work'
  command = [
    sys.executable, '-m', 'tools.lifelong', '--config=configs/mtdnn.py:sst2,rte',
    f'--workdir={work}', '--steps=3', '--methods=ewc', '--replay=5',
    '--fisher_examples=8', f'--config.data.glue_dir={glue}',
    f'--config.data.tokenizer_path={spm_path}', *finetune_runs.KEYWORD_SIZES,
    '--config.seq_len=32', '--config.batch_size=8', '--config.peak_flops_per_device=1e9',
  ]  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-4000:]
  config = mtdnn_config.get_config('sst2,rte')
  config.data.glue_dir = str(glue)
  records = tasks.load_examples(config.data, 'train')
  rte = [p for p, r in enumerate(records) if r['task'] == 1]
  assert tasks.read_positions(str(work / 'stage0' / 'labelled.txt')) == list(range(24))
  assert tasks.read_positions(str(work / 'ewc' / 'stage1' / 'labelled.txt')) == rte
  with open(work / 'ewc' / 'stage1' / 'run' / 'config.json') as f:
    saved = json.load(f)
  assert saved['init_from'] == str(work / 'stage0' / 'run')
  assert saved['optimizer']['ewc_fisher'] == str(work / 'ewc' / 'fisher_0.npz')
  assert (work / 'ewc' / 'fisher_0.npz').stat().st_size > 0
  with open(work / 'lifelong.json') as f:
    report = json.load(f)['methods']
  assert set(report) == {'ewc'}
  for r in report.values():
    m = np.asarray(r['matrix'])
    assert m.shape == (2, 2)
    assert r['forgetting'] == pytest.approx(m[0, 0] - m[1, 0])
  assert report['ewc']['matrix'][0] == [100 * v for v in _stage0_scores(work)]
  stamp = os.path.getmtime(work / 'ewc' / 'stage1' / 'run' / 'eval.json')
  again = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-4000:]
  assert os.path.getmtime(work / 'ewc' / 'stage1' / 'run' / 'eval.json') == stamp
