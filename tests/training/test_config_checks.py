"""Tests of training/config_checks.py: every shipped config passes; a bad value of any
checked key is an error naming that key, its value and its range; all errors come at once."""

import math

import pytest

from configs import base, loading
from tests.test_configs import CASES
from training import config_checks, optimizers

TRAIN_CASES = [(p, a) for p, a in CASES if p != 'configs/fewshot.py']  # fewshot: an eval spec.


def _leaves(config, prefix=''):
  for key in config.keys():
    value = config[key]
    if hasattr(value, 'keys') and f'{prefix}{key}' != 'reference.scores':
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', config, key


def _numeric_keys():
  """Dotted keys of base's int / float / tuple-of-number leaves (placeholders by type)."""
  keys = []
  for dotted, section, key in _leaves(base.get_config()):
    kind = section.get_type(key)
    if kind in (int, float) or (
      kind is tuple and all(isinstance(v, int | float) for v in section[key])
    ):
      keys.append(dotted)
  return keys


def _set(config, dotted: str, value):
  *path, key = dotted.split('.')
  section = config
  for name in path:
    section = section[name]
  section[key] = value


def _bad_value(dotted: str):
  """A value just outside the key's range, of the key's type."""
  valid = config_checks.range_for(dotted)
  if valid.low is not None:
    bad = valid.low if valid.low_open else valid.low - 1
    while bad in valid.also:  # mesh's -1 is allowed: go one further.
      bad -= 1
  else:
    bad = valid.high if valid.high_open else valid.high + 1
  default = dict((k, s[key]) for k, s, key in _leaves(base.get_config()))[dotted]
  if isinstance(default, tuple):
    return (default[0], float(bad)) if len(default) > 1 else (float(bad),)
  return int(bad) if valid.integer else float(bad)


def _errors_of(config) -> str:
  with pytest.raises(ValueError) as raised:
    config_checks.validate(config)
  return str(raised.value)


def test_the_defaults_pass():
  config_checks.validate(base.get_config())


@pytest.mark.parametrize(
  'path,arg', TRAIN_CASES, ids=[f'{p}:{a}' if a else p for p, a in TRAIN_CASES]
)
def test_every_shipped_config_passes(path, arg):
  config_checks.validate(loading.load(f'{path}:{arg}' if arg else path))


def test_every_numeric_key_has_a_range():
  """A numeric key added to configs/base.py (or an objective's config()) without a
  range here fails: 'every numeric value is checked' stays true."""
  unchecked = [k for k in _numeric_keys() if config_checks.range_for(k) is None]
  assert not unchecked
  assert len(_numeric_keys()) > 80


@pytest.mark.parametrize('key', _numeric_keys())
def test_a_value_out_of_range_names_the_key_value_and_range(key):
  config = base.get_config().unlock()
  bad = _bad_value(key)
  assert not all(
    config_checks.range_for(key).allows(v) for v in (bad if isinstance(bad, tuple) else (bad,))
  )
  _set(config, key, bad)
  message = _errors_of(config)
  assert message.startswith('1 invalid config value(s)'), message
  assert f'{key}={bad!r}: must' in message
  assert config_checks.range_for(key).describe() in message


@pytest.mark.parametrize('key', ['optimizer.learning_rate', 'loss_spike_zscore', 'num_epochs'])
@pytest.mark.parametrize('value', [math.nan, math.inf])
def test_nan_and_infinity_are_out_of_every_range(key, value):
  config = base.get_config().unlock()
  _set(config, key, value)
  assert f'{key}={value!r}' in _errors_of(config)


@pytest.mark.parametrize('key', sorted(config_checks.choices()))
def test_an_unknown_choice_names_the_key_and_the_allowed_values(key):
  config = base.get_config().unlock()
  _set(config, key, 'no-such-value')
  allowed = config_checks.choices()[key]
  assert f"{key}='no-such-value': must be one of {allowed}" in _errors_of(config)


def test_every_error_comes_in_one_message():
  config = base.get_config().unlock()
  config.batch_size = 0
  config.optimizer.b2 = 1.0
  config.data.on_decode_error = 'ignore'
  config.objective.mask_rate = 1.5
  config.mesh.data, config.mesh.tensor = -1, -1
  message = _errors_of(config)
  assert message.startswith('5 invalid config value(s)')
  for part in ('batch_size=0', 'optimizer.b2=1.0', "data.on_decode_error='ignore'"):
    assert part in message
  assert 'objective.mask_rate=1.5: must be a number in [0.0, 1.0]' in message
  assert 'mesh.data and mesh.tensor are each -1' in message


def test_the_special_values_outside_a_range_pass():
  config = base.get_config().unlock()
  config.objective.max_predictions_per_seq = -1  # MLM: predict at every position.
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, -1, 1
  config.model.dropout_rate = None  # The preset's.
  config_checks.validate(config)
  config.mesh.fsdp = -2
  assert 'mesh.fsdp=-2: must be -1 or an integer >= 1' in _errors_of(config)


def test_a_bool_is_not_a_size():
  config = base.get_config().unlock()
  config.batch_size = True  # ConfigDict lets a bool into an int field.
  assert 'batch_size=True: must be an integer >= 1' in _errors_of(config)


def test_nothing_to_train_and_warmup_past_the_end_are_errors():
  config = base.get_config().unlock()
  config.total_steps, config.num_epochs = 0, 0.0
  assert 'total_steps=0 and num_epochs=0' in _errors_of(config)
  config.num_epochs = 3.0
  config_checks.validate(config)  # Sized from the records read (fine-tuning).
  config.total_steps, config.optimizer.warmup_steps = 50, 51
  assert 'optimizer.warmup_steps=51: must be <= total_steps=50' in _errors_of(config)
  config.optimizer.warmup_ratio = 0.1
  assert 'optimizer.warmup_ratio=0.1 and optimizer.warmup_steps=51: set one' in _errors_of(config)
  config.optimizer.warmup_steps = 0  # The ratio scales with total_steps.
  config_checks.validate(config)


def test_the_schedules_are_the_ones_the_optimizer_builds():
  opt = base.get_config().optimizer.unlock()
  for name in optimizers.SCHEDULES:
    opt.schedule = name
    assert math.isfinite(float(optimizers.learning_rate_schedule(opt, 100)(50)))
  opt.schedule = 'no-such-schedule'
  with pytest.raises(ValueError, match='optimizer.schedule'):
    optimizers.learning_rate_schedule(opt, 100)
