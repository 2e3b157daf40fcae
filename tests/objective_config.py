"""The `config.objective` section tests hand to objectives: every objective's defaults
(configs/base.py) with a test's overrides; a mistyped key is an error, as in a run."""

from configs import base


def objective_config(**overrides):
  """configs/base.py's objective section (locked) with `overrides` applied."""
  section = base.get_config().objective
  for key, value in overrides.items():
    section[key] = value
  return section
