"""A run trained with looped layers, converted by tools/relayout.py, resumes with
scanned layers and ends where the uninterrupted looped run ends."""

import os

import jax
import numpy as np
import pytest

from configs import quickstart
from evaluation import during_training
from models.convert import scan
from tests.training import runs
from tools import relayout
from training import checkpointing


def _config(spm_path, steps, scan_layers):
  config = quickstart.get_config()
  config.model.num_layers, config.model.d_model = 2, 32
  config.model.num_heads, config.model.mlp_dim = 2, 64
  config.model.dropout_rate = 0.0  # Dropout masks are drawn per layout; the rest is equal.
  config.model.scan_layers = scan_layers
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 32, steps
  config.log_every_steps, config.eval_every_steps = 1, 0
  config.checkpoint_every_steps = 2
  config.optimizer.schedule, config.optimizer.warmup_steps = 'constant', 0
  config.optimizer.warmup_ratio = 0.0
  return config


def _die(*args, **kwargs):
  raise RuntimeError('killed while writing the converted checkpoint')


def _final_params(workdir):
  import orbax.checkpoint as ocp

  path = os.path.join(workdir, 'checkpoints')
  manager = ocp.CheckpointManager(path, item_names=('state',))
  step = manager.latest_step()
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, jax.tree.map(np.asarray, state.state['params'])


@pytest.mark.slow
def test_a_run_switches_layout_and_resumes_where_it_was(tmp_path, spm_path):
  reference, first, switched = (str(tmp_path / n) for n in ('reference', 'first', 'switched'))
  during_training.train_and_evaluate(_config(spm_path, 6, scan_layers=False), reference)
  during_training.train_and_evaluate(_config(spm_path, 4, scan_layers=False), first)
  # A conversion that dies before its checkpoint is written leaves none behind; the same
  # command then finishes it.
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpointing.Checkpointer, 'save', _die)
    with pytest.raises(RuntimeError, match='killed'):
      relayout.main(['--to', 'scanned', first, switched])
  assert checkpointing.Checkpointer(switched, keep=1, save_every=1).latest_step() is None
  assert relayout.main(['--to', 'scanned', first, switched]) == 0
  with pytest.raises(ValueError, match='already holds checkpoints'):
    relayout.main(['--to', 'scanned', first, switched])
  during_training.train_and_evaluate(_config(spm_path, 6, scan_layers=True), switched)
  step, expected = _final_params(reference)
  step_switched, got = _final_params(switched)
  assert step == step_switched == 6
  # Adam's normalized updates turn float rounding (the scan sums in another order) into
  # parameter differences of ~2e-5 after two steps; mixed-up layers differ at the init's
  # scale (std 0.02).
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), scan.to_scanned(expected), got
  )
  losses = {n: runs.losses(d) for n, d in (('reference', reference), ('switched', switched))}
  np.testing.assert_allclose(
    [losses['switched'][s] for s in (5, 6)], [losses['reference'][s] for s in (5, 6)], atol=1e-5
  )
