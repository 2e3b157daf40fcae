"""Every experiment config loads, is locked, and names a known preset and objective."""

import glob
import importlib
import os

import pytest

from models import presets
from objectives import api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
  os.path.splitext(os.path.basename(p))[0]
  for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
  if os.path.basename(p) not in ('__init__.py', 'loading.py')
)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_complete_and_locked(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert config.is_locked
  with pytest.raises(AttributeError, match='no_such_key'):
    config.no_such_key = 1
  assert config.model.preset in presets.names()
  api.load(config.objective.module, config.objective)
  assert config.batch_size > 0 and config.seq_len > 0 and config.total_steps > 0
  max_positions = getattr(presets.get_config(config.model.preset), 'max_positions', None)
  assert max_positions is None or config.seq_len <= max_positions
