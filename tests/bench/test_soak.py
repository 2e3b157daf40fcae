"""bench/soak.py at its smallest: two interruptions (one SIGKILL, one SIGTERM, one of them
at a checkpoint step) and one corrupted checkpoint, and the run still ends bit-identical
to the uninterrupted one, with nothing logged twice."""

import json
import random

import pytest

from bench import soak


def test_kill_plan_mixes_signals_and_meets_checkpoint_saves():
  plan = soak.plan_kills(random.Random(0), 6, 40, 5)
  steps = [s for s, _ in plan]
  assert steps == sorted(set(steps)) and all(1 <= s < 40 for s in steps)
  assert sorted(sig for _, sig in plan) == ['SIGKILL'] * 3 + ['SIGTERM'] * 3
  assert sum(s % 5 == 0 for s in steps) == 3


@pytest.mark.slow
def test_soak_ends_bit_identical_after_kills_and_a_corruption(tmp_path, spm_path):
  out = tmp_path / 'soak.json'
  argv = ['--kills', '2', '--steps', '8', '--checkpoint-every', '2', '--seed', '0']
  argv += ['--workdir', str(tmp_path / 'runs'), '--json', str(out)]
  argv += ['--set', 'seq_len=32', '--set', f'data.tokenizer_path={spm_path}']
  assert soak.main(argv) == 0
  report = json.loads(out.read_text())
  assert report['passed'] and report['sigkills'] == report['sigterms'] == 1
  assert report['corrupted_file'] and report['fallback_logged']
  assert report['steps_redone_after_sigterm'] == 0 and report['steps_logged_twice'] == []
  assert report['steps_redone_after_corruption'] >= 1  # Back to an older checkpoint.
  assert report['final_step'] == [8, 8] and report['state_arrays_differing'] == []
  assert report['losses_equal'] and report['state_arrays'] > 0
