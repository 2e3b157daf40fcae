"""`python -m tools.self_paced` (run as a process: its flags would clash with other tools'
in this one): round 0 on the length curriculum, every later round from the round before
with that model's own losses as the difficulty and a growing starting competence; a second
invocation trains nothing again."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import curriculum
from tests.training import finetune_runs, runs


@pytest.mark.slow
def test_self_paced_rounds_end_to_end(spm_path, tmp_path):
  finetune_runs.write_sst2(tmp_path / 'glue', 24, 8)
  work = tmp_path / 'work'
  command = [
    sys.executable, '-m', 'tools.self_paced', '--config=configs/glue.py:sst2',
    f'--workdir={work}', '--rounds=2', '--steps=3', f'--config.data.glue_dir={tmp_path / "glue"}',
    f'--config.data.tokenizer_path={spm_path}', *finetune_runs.KEYWORD_SIZES,
    '--config.seq_len=32', '--config.batch_size=8', '--config.peak_flops_per_device=1e9',
  ]  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-4000:]
  scores = curriculum.read_scores(str(work / 'scores_1.txt'), 24)  # Round 0's own losses.
  assert np.isfinite(scores).all() and scores.std() > 0
  with open(work / 'round0' / 'config.json') as f:
    first = json.load(f)
  assert first['curriculum']['difficulty'] == 'length' and first['curriculum']['initial'] == 0.01
  assert first['total_steps'] == 3 and first['curriculum']['steps'] == 1
  with open(work / 'round1' / 'config.json') as f:
    saved = json.load(f)
  assert saved['init_from'] == str(work / 'round0')
  assert saved['curriculum']['difficulty'] == str(work / 'scores_1.txt')
  assert saved['curriculum']['initial'] == 0.5
  with open(work / 'self_paced.json') as f:
    report = json.load(f)['rounds']
  assert [r['difficulty'] for r in report] == ['length', str(work / 'scores_1.txt')]
  stamp = os.path.getmtime(work / 'round1' / 'eval.json')
  again = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-4000:]
  assert os.path.getmtime(work / 'round1' / 'eval.json') == stamp
