"""A run killed with SIGKILL and restarted ends exactly where an uninterrupted run ends,
with batches read ahead by the prefetch thread (the checkpoint holds the data state of
the batches trained on, not of those read ahead); a run sent SIGTERM (a preemption
notice) checkpoints the step it is in, exits 0, and its restart redoes nothing."""

import collections
import glob
import json
import re
import signal
import subprocess

import numpy as np
import pytest

from bench import soak
from tests.training import runs


@pytest.mark.slow
def test_sigkill_and_restart_matches_uninterrupted_run(tmp_path, spm_path):
  overrides = (
    *runs.TINY_OVERRIDES,
    '--config.total_steps=12',
    '--config.checkpoint_every_steps=3',
    '--config.data.prefetch=3',  # The kill comes with 3 batches read ahead of step 7.
    f'--config.data.tokenizer_path={spm_path}',
  )
  straight, broken = str(tmp_path / 'straight'), str(tmp_path / 'broken')
  quiet = runs.run('train.py', straight, *overrides)
  # The console holds the run's own lines; Orbax's and JAX's INFO records go to logs/.
  assert 'step 12/12' in quiet.stdout and not re.search(r'^I\d{4} ', quiet.stderr, re.M)
  (log,) = glob.glob(f'{straight}/logs/train-*.log')
  assert 'Saving checkpoint at step 12' in open(log).read()

  killed = runs.run('train.py', broken, *overrides, '--fault_kill_after_step=7', check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]  # Really killed, not finished.
  assert max(runs.losses(broken)) == 7
  resumed = runs.run('train.py', broken, *overrides, '--console_log_level=info')
  assert 'Resumed from step' in resumed.stdout
  assert re.search(r'^I\d{4} .*checkpoint_manager', resumed.stderr, re.M)  # Asked for: shown.
  assert len(glob.glob(f'{broken}/logs/train-*.log')) == 2  # The killed run's and this one's.

  kept = f'{broken}/tokenizer/spm.model'  # The run keeps a copy of its tokenizer.
  with open(kept, 'rb') as a, open(spm_path, 'rb') as b:
    assert a.read() == b.read()
  expected, got = runs.losses(straight), runs.losses(broken)
  assert [got[s] for s in range(8, 13)] == [expected[s] for s in range(8, 13)]
  _assert_same_final_params(straight, broken)

  # SIGTERM from outside once step 4 is logged: the run ends at a step boundary with
  # that step checkpointed (none is due before 6), and exits 0.
  preempted = str(tmp_path / 'preempted')
  proc = subprocess.Popen(
    runs.command('train.py', preempted, *overrides, '--config.checkpoint_every_steps=6'),
    env=runs.env(),
    cwd=runs.ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in proc.stdout:
    if line.startswith('step 4/12'):
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  (stopped,) = re.findall(r'SIGTERM received: stopped after step (\d+) with its checkpoint', out)
  stopped = int(stopped)
  assert 4 <= stopped < 12
  assert soak.final_state(preempted)[0] == stopped == max(runs.losses(preempted))
  resumed = runs.run('train.py', preempted, *overrides, '--config.checkpoint_every_steps=6')
  assert f'Resumed from step {stopped}' in resumed.stdout
  assert _logged_steps(preempted) == list(range(1, 13))  # Each step once: nothing redone.
  assert runs.losses(preempted) == expected
  _assert_same_final_params(straight, preempted)


def _logged_steps(workdir: str) -> list[int]:
  """The steps of metrics.jsonl's training records, in file order (repeats kept)."""
  with open(f'{workdir}/metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  steps = [r['step'] for r in records if 'loss' in r]
  assert not [s for s, n in collections.Counter(steps).items() if n > 1], steps
  return steps


def _assert_same_final_params(workdir_a: str, workdir_b: str):
  """The newest checkpoints of both runs are step 12 with bit-identical params."""
  (step_a, state_a), (step_b, state_b) = soak.final_state(workdir_a), soak.final_state(workdir_b)
  assert step_a == step_b == 12
  params_a = {k: v for k, v in state_a.items() if k.startswith('params/')}
  params_b = {k: v for k, v in state_b.items() if k.startswith('params/')}
  assert params_a.keys() == params_b.keys() and params_a
  for name in params_a:
    np.testing.assert_array_equal(params_a[name], params_b[name], err_msg=name)
