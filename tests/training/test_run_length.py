"""How long a run is: warm-up in steps or as a fraction, runs sized in epochs over the
records actually read (training/optimizers.py, training/experiment.py)."""

import numpy as np
import pytest

from configs import base, glue
from training import experiment, optimizers


def _opt(**overrides):
  opt = base.get_config().optimizer
  opt.learning_rate, opt.end_lr_fraction, opt.schedule = 1.0, 0.0, 'linear'
  for key, value in overrides.items():
    opt[key] = value
  return opt


def test_warmup_ratio_scales_with_total_steps():
  for total in (100, 1000):
    opt = _opt(warmup_steps=0, warmup_ratio=0.1)
    assert optimizers.warmup_steps(opt, total) == total // 10
    schedule = optimizers.learning_rate_schedule(opt, total)
    # Linear from 0 to the peak over the warm-up, then linear decay to 0 at total_steps.
    np.testing.assert_allclose(
      [float(schedule(s)) for s in (0, total // 20, total // 10, total)], [0, 0.5, 1, 0], atol=1e-6
    )


def test_warmup_steps_and_ratio_both_set_is_an_error():
  with pytest.raises(ValueError, match='warmup_ratio=0.1 and optimizer.warmup_steps=60'):
    optimizers.warmup_steps(_opt(warmup_steps=60, warmup_ratio=0.1), 500)
  with pytest.raises(ValueError, match='warmup_ratio=1.5 must be in'):
    optimizers.warmup_steps(_opt(warmup_steps=0, warmup_ratio=1.5), 500)
  with pytest.raises(ValueError, match='warmup_steps=600 must be between 0 and total_steps=500'):
    optimizers.warmup_steps(_opt(warmup_steps=600), 500)


def test_glue_config_is_sized_from_the_records_read():
  """The issue's case: a shortened run (or a smaller train.tsv) is not stopped by a warm-up
  sized for the full task."""
  config = glue.get_config('sst2')
  notes = experiment.size_epochs(config, 1000)  # A 1,000-row train.tsv, not SST-2's 67,349.
  assert config.total_steps == -(-3 * 1000 // 32) == 94
  assert config.eval_every_steps == 16  # Twice per epoch of 32 steps.
  assert optimizers.warmup_steps(config.optimizer, config.total_steps) == 9
  assert any('total_steps=94' in n for n in notes)
  shortened = glue.get_config('sst2')
  shortened.total_steps = 20  # The user's override wins over num_epochs, and says so.
  notes = experiment.size_epochs(shortened, 67_349)
  assert shortened.total_steps == 20 and shortened.eval_every_steps == 1052
  assert any('num_epochs is not used' in n for n in notes)
  assert optimizers.warmup_steps(shortened.optimizer, shortened.total_steps) == 2


def test_epochs_need_a_task_source():
  config = base.get_config()
  config.total_steps, config.num_epochs = 0, 2.0
  with pytest.raises(ValueError, match="num_epochs=2.0 sizes fine-tuning runs.*'embedded'"):
    experiment.size_epochs(config, 100)
