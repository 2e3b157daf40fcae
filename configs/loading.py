"""Loads a config file with `--config.key=value` overrides, outside a command line's flags.

train.py, eval.py and the tools define their `--config` flag with ml_collections'
`config_flags.DEFINE_config_file`. Scripts that load several configs in one process
(bench/objectives.py, bench/pretrain_compare.py) or take the overrides as a list use
`load`, which runs the very same loader on a private set of flags, so a file path,
its `:argument`, the override syntax and the errors (a mistyped key names itself) are
the same everywhere.

    config = loading.load('configs/glue.py:sst2', ['--config.batch_size=8'])
"""

from collections.abc import Sequence

from absl import flags
from ml_collections import config_dict, config_flags


def load(spec: str, overrides: Sequence[str] = ()) -> config_dict.ConfigDict:
  """The config of `spec` ('path/to/file.py' or 'path/to/file.py:argument').

  Args:
    spec: the config file, as `--config` takes it.
    overrides: '--config.key=value' strings (or '--config.key', 'value'), in order.

  Returns:
    The locked ConfigDict.

  Raises:
    ValueError: an argument that is not a config override, a value of the wrong type,
      or a key the config does not have (the message names it).
  """
  argv = ['load', f'--config={spec}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file.', flag_values=values, sys_argv=argv
  )
  try:
    rest = values(argv)[1:]
  except (flags.Error, AttributeError, KeyError) as e:  # AttributeError: a mistyped key.
    raise ValueError(f'{spec}: {e}') from e
  if rest:
    raise ValueError(f'{spec}: {rest} are not --config.<key>=<value> overrides.')
  return values.config
