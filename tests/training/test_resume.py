"""A run killed with SIGKILL and restarted ends exactly where an uninterrupted run ends,
with batches read ahead by the prefetch thread (the checkpoint holds the data state of
the batches trained on, not of those read ahead)."""

import glob
import re

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.training import runs


def _final_params(workdir: str) -> dict:
  manager = ocp.CheckpointManager(f'{workdir}/checkpoints', item_names=('state',))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored.state['params']


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
  (step_a, params_a), (step_b, params_b) = _final_params(straight), _final_params(broken)
  assert step_a == step_b == 12
  flat_a, flat_b = dict(_flatten(params_a)), dict(_flatten(params_b))
  assert flat_a.keys() == flat_b.keys()
  for name in flat_a:
    np.testing.assert_array_equal(flat_a[name], flat_b[name], err_msg=name)


def _flatten(tree, prefix=''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, f'{prefix}{key}/')
    else:
      yield prefix + key, np.asarray(value)
