"""Loads a config file and its `--config.key=value` overrides without config_flags.

The benchmarks must run where TensorFlow, TFDS, Grain and ml_collections are
not installed (a bare accelerator machine). `load_config` therefore imports the
config file by path with importlib, and when `ml_collections` cannot be
imported it first installs a minimal stand-in module (`ConfigDict`,
`placeholder`) that is enough for `configs/*.py`. Overrides are parsed here:
the value is converted to the type of the existing field, and an unknown key
is an error that names it and lists the keys that do exist.
"""

import ast
import copy
import importlib.util
import json
import os
import sys
import types
from collections.abc import Sequence

_TRUE = ('true', '1', 'yes')
_FALSE = ('false', '0', 'no')


class ConfigDict:
  """Attribute dict with nested ConfigDicts, a stand-in for ml_collections' own.

  Supports what the configs and the benchmarks use: attribute and item access,
  `lock()` (afterwards adding a key is an error naming it), `to_dict`,
  `to_json` and `copy_and_resolve_references`. No field references.
  """

  def __init__(self, initial: dict | None = None):
    object.__setattr__(self, '_fields', {})
    object.__setattr__(self, '_locked', False)
    for key, value in (initial or {}).items():
      self[key] = value

  def __getattr__(self, name: str):
    if name.startswith('_'):  # Keeps copy/pickle protocols and `_fields` itself sane.
      raise AttributeError(name)
    try:
      return self._fields[name]
    except KeyError:
      raise AttributeError(
        f'Key {name!r} does not exist; known keys: {", ".join(self._fields)}.'
      ) from None

  def __setattr__(self, name: str, value):
    self[name] = value

  def __getitem__(self, key: str):
    return self._fields[key]

  def __setitem__(self, key: str, value):
    if self._locked and key not in self._fields:
      raise AttributeError(
        f'Key {key!r} does not exist and cannot be added since the config is locked; '
        f'known keys: {", ".join(self._fields)}.'
      )
    if isinstance(value, dict):
      value = ConfigDict(value)
    self._fields[key] = value

  def __contains__(self, key) -> bool:
    return key in self._fields

  def __iter__(self):
    return iter(self._fields)

  def keys(self):
    return self._fields.keys()

  def items(self):
    return self._fields.items()

  def get(self, key: str, default=None):
    return self._fields.get(key, default)

  def lock(self) -> 'ConfigDict':
    object.__setattr__(self, '_locked', True)
    for value in self._fields.values():
      if isinstance(value, ConfigDict):
        value.lock()
    return self

  def unlock(self) -> 'ConfigDict':
    object.__setattr__(self, '_locked', False)
    for value in self._fields.values():
      if isinstance(value, ConfigDict):
        value.unlock()
    return self

  @property
  def is_locked(self) -> bool:
    return self._locked

  def to_dict(self) -> dict:
    return {
      k: v.to_dict() if isinstance(v, ConfigDict) else copy.deepcopy(v)
      for k, v in self._fields.items()
    }

  def to_json(self, **kwargs) -> str:
    return json.dumps(self.to_dict(), **kwargs)

  def copy_and_resolve_references(self) -> 'ConfigDict':
    out = ConfigDict(self.to_dict())
    return out.lock() if self._locked else out

  def __repr__(self) -> str:
    return f'ConfigDict({self.to_dict()!r})'


def placeholder(field_type=None, required: bool = False):
  """Stand-in for `config_dict.placeholder`: the field is simply None."""
  del field_type, required
  return None


def install_ml_collections_stand_in() -> bool:
  """Makes `from ml_collections import config_dict` work when ml_collections is absent.

  Returns:
    True if the stand-in was installed, False if the real package is importable.
  """
  try:
    import ml_collections  # noqa: F401
  except ImportError:
    pass
  else:
    return False
  package = types.ModuleType('ml_collections')
  package.__doc__ = 'Minimal stand-in installed by bench/config_loader.py.'
  module = types.ModuleType('ml_collections.config_dict')
  module.ConfigDict = ConfigDict
  module.placeholder = placeholder
  package.config_dict = module
  package.ConfigDict = ConfigDict
  sys.modules['ml_collections'] = package
  sys.modules['ml_collections.config_dict'] = module
  return True


def load_config(path: str, overrides: Sequence[str] = ()):
  """Runs `get_config()` of the config file at `path` and applies `overrides`.

  Args:
    path: A Python config file (e.g. configs/quickstart.py); `file.py:arg` passes
      `arg` to `get_config`, as ml_collections' config_flags does.
    overrides: Command-line arguments `--config.a.b=value` (or `--config.a.b`
      followed by the value as the next argument).

  Returns:
    The (locked) config with the overrides applied.
  """
  install_ml_collections_stand_in()
  arg = None
  if not os.path.isfile(path) and ':' in path:
    path, arg = path.rsplit(':', 1)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Config file {path!r} does not exist.')
  name = '_bench_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ValueError(f'Config file {path!r} defines no get_config().')
  config = module.get_config() if arg is None else module.get_config(arg)
  for key, value in parse_overrides(overrides):
    set_override(config, key, value)
  return config


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
  """[(dotted key, raw value)] from `--config.key=value` / `--config.key value` arguments."""
  pairs, i = [], 0
  while i < len(args):
    arg = args[i]
    if not arg.startswith('--config.'):
      raise ValueError(f'Unrecognized argument {arg!r}; config overrides look like --config.a.b=v.')
    key, eq, value = arg[len('--config.') :].partition('=')
    if not eq:
      if i + 1 >= len(args):
        raise ValueError(f'Override {arg!r} has no value; write {arg}=VALUE.')
      i += 1
      value = args[i]
    pairs.append((key, value))
    i += 1
  return pairs


def _field_type(node, key: str):
  """The declared type of `node.key`: ml_collections knows it even for placeholders."""
  get_type = getattr(type(node), 'get_type', None)
  if get_type is not None:
    return get_type(node, key)
  value = node[key]
  return None if value is None else type(value)


def _convert(raw: str, field_type, key: str):
  if field_type is bool:
    if raw.lower() in _TRUE:
      return True
    if raw.lower() in _FALSE:
      return False
    raise ValueError(f'--config.{key}={raw!r}: expected a bool (true/false).')
  if field_type in (int, float):
    try:
      return field_type(raw)
    except ValueError:
      raise ValueError(
        f'--config.{key}={raw!r}: expected {"an int" if field_type is int else "a float"}.'
      ) from None
  if field_type is str:
    return raw
  try:  # None (a placeholder in the stand-in), tuples, lists, dicts.
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    if field_type in (tuple, list, dict):
      raise ValueError(
        f'--config.{key}={raw!r}: expected a Python {field_type.__name__}.'
      ) from None
    return raw
  return float(value) if field_type is float and isinstance(value, int) else value


def set_override(config, dotted_key: str, raw: str):
  """Sets `config.<dotted_key>` from the string `raw`, typed like the existing field."""
  parts = dotted_key.split('.')
  node = config
  for i, part in enumerate(parts):
    if not hasattr(node, 'keys') or part not in node:
      where = repr('.'.join(parts[:i])) if i else 'the top level'
      known = ', '.join(node.keys()) if hasattr(node, 'keys') else f'none ({type(node).__name__})'
      raise ValueError(
        f'Unknown config key {dotted_key!r} (from --config.{dotted_key}): no {part!r} at '
        f'{where}; keys there: {known}.'
      )
    if i < len(parts) - 1:
      node = node[part]
  leaf = parts[-1]
  if raw == 'None' and node[leaf] is None:  # Back to an unset placeholder.
    node[leaf] = None
    return
  node[leaf] = _convert(raw, _field_type(node, leaf), dotted_key)
