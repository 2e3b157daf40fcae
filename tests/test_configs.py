"""Every experiment config loads, is locked, adds no key, names a known preset and objective,
and documents its command, hardware and expected figure; the objective sections merge
without a key declared twice, and configs/loading.py reads files as config_flags does."""

import ast
import glob
import importlib
import os
import re

import pytest

from configs import base, clue, dapt, fewshot, glue, loading, squad
from models import presets
from objectives import api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_EXPERIMENTS = ('__init__.py', 'base.py', 'loading.py')
FILES = sorted(
  os.path.relpath(p, ROOT)
  for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
  if os.path.basename(p) not in _NOT_EXPERIMENTS
)
# The arguments after the colon of the configs that take one (all of them are checked).
ARGUMENTS = {
  'configs/glue.py': sorted(glue.TRAIN_SIZES),
  'configs/clue.py': sorted(clue.TASKS),
  'configs/squad.py': sorted(squad._VERSIONS),
  'configs/dapt.py': sorted(dapt.TEXT_SIZES),
  'configs/fewshot.py': sorted(fewshot.TASKS),
  'configs/pet.py': ['sst2', 'sst2,classifier', 'rte', 'eprstmt', 'eprstmt,classifier'],
  'configs/mtdnn.py': ['mrpc,rte,stsb', 'cola,sst2'],
  'configs/probe.py': ['pos,chunk,ner,sst2', 'ner'],
  'configs/conll.py': ['', 'mrc', 'msra', 'msra,mrc'],
  'configs/kbert.py': ['sst2', 'chnsenticorp'],
  'configs/meta.py': ['thucnews,prototypical', 'thucnews,fomaml', 'thucnews,reptile'],
}
CASES = [(path, arg) for path in FILES for arg in ARGUMENTS.get(path, [None])]


def _module(path: str):
  return importlib.import_module(path[:-3].replace(os.sep, '.'))


def test_the_experiment_files_are_found_in_every_folder():
  folders = {os.path.dirname(p) for p in FILES}
  assert folders == {'configs', 'configs/cpu', 'configs/paper', 'configs/plan'}
  assert 'configs/quickstart.py' in FILES and 'configs/paper/t5_small.py' in FILES


@pytest.mark.parametrize('path,arg', CASES, ids=[f'{p}:{a}' if a else p for p, a in CASES])
def test_config_is_complete_and_locked(path, arg):
  module = _module(path)
  config = module.get_config(arg) if arg else module.get_config()
  assert config.is_locked
  with pytest.raises(AttributeError, match='no_such_key'):
    config.no_such_key = 1
  if path == 'configs/fewshot.py':  # An evaluation spec: the model comes from --model.
    assert config.prompt.candidates and config.task == arg
    return
  # Nothing beyond base's keys: an experiment overrides, it does not add.
  assert set(_flat(config.to_dict())) == set(_flat(base.get_config().to_dict())), path
  assert config.model.preset in presets.names()
  api.load(config.objective.module, config.objective)
  assert config.batch_size > 0 and config.seq_len > 0
  assert config.total_steps > 0 or config.num_epochs > 0
  max_positions = getattr(presets.get_config(config.model.preset), 'max_positions', None)
  assert max_positions is None or config.seq_len <= max_positions


def _flat(tree: dict, prefix: str = '') -> list[str]:
  keys = []
  for key, value in tree.items():
    if isinstance(value, dict) and key != 'scores':  # reference.scores holds a dict value.
      keys += _flat(value, f'{prefix}{key}.')
    else:
      keys.append(prefix + key)
  return keys


@pytest.mark.parametrize('path', FILES)
def test_config_file_documents_command_hardware_and_expected_figure(path):
  with open(os.path.join(ROOT, path)) as f:
    source = f.read()
  doc = ast.get_docstring(ast.parse(source)) or ''
  assert re.search(rf'--config[ =]{re.escape(path)}\b', doc), f'{path}: no command naming it'
  assert 'Hardware' in doc, f'{path}: no hardware'
  assert 'Expected' in doc or 'expected' in doc, f'{path}: no expected figure'
  assert 'unlocked' not in source, f'{path}: an experiment overrides keys, it does not add them'


def test_scale_folders_hold_their_scale():
  for path in FILES:
    doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, path)).read()))
    if path.startswith('configs/cpu/'):
      assert 'CPU' in doc or 'laptop' in doc, path
      config = _module(path).get_config()
      assert config.data.source in ('embedded', 'text') and config.total_steps <= 1000, path
    if path.startswith('configs/paper/'):
      config = _module(path).get_config()
      assert config.data.source == 'tfds' and config.total_steps >= 100_000, path


def test_every_objective_key_has_one_owner_and_base_holds_them_all():
  section = base.get_config().objective
  declared = {}
  for path in sorted(glob.glob(os.path.join(ROOT, 'objectives', '*.py'))):
    module = importlib.import_module(f'objectives.{os.path.basename(path)[:-3]}')
    for key in getattr(module, 'config', dict)():
      assert key not in declared, f'objective.{key}: {declared.get(key)} and {module.__name__}'
      declared[key] = module.__name__
  assert set(section) == set(declared) | {'module', 'task'}
  assert section.mask_rate == 0.15 and section.noise_density == 0.15  # Papers' defaults.


def test_a_key_declared_twice_is_an_error(monkeypatch):
  from objectives import mass

  monkeypatch.setattr(mass, 'config', lambda: {'mask_rate': 0.5})
  with pytest.raises(
    ValueError, match=r'objective.mask_rate is declared by both objectives.mass and objectives.mlm'
  ):
    base.get_config()


def test_no_second_default_in_code():
  """Config sections are read by attribute: a `.get(key, default)` on a config would hide a
  second default (configs/base.py and the objectives' config() hold the only ones)."""
  pattern = re.compile(r'\b(objective_cfg|opt_cfg|data_cfg|config|cfg|spec)\.get\(')
  found = []
  for folder in ('data', 'models', 'objectives', 'training', 'evaluation', 'tools'):
    for path in glob.glob(os.path.join(ROOT, folder, '**', '*.py'), recursive=True):
      with open(path) as f:
        for number, line in enumerate(f, 1):
          if pattern.search(line) and '# A saved config' not in line:
            found.append(f'{os.path.relpath(path, ROOT)}:{number}: {line.strip()}')
  assert not found, '\n'.join(found)


def test_loading_reads_a_file_as_config_flags_does():
  config = loading.load(
    'configs/quickstart.py',
    ['--config.seq_len=64', '--config.model.dropout_rate', '0', '--config.mesh.strategy=dp'],
  )
  assert config.seq_len == 64 and config.mesh.strategy == 'dp' and config.is_locked
  assert config.model.dropout_rate == 0.0 and isinstance(config.model.dropout_rate, float)
  assert loading.load('configs/glue.py:rte').data.task == 'rte'
  with pytest.raises(ValueError, match='presett.*Did you mean "preset"'):
    loading.load('configs/quickstart.py', ['--config.model.presett=bert-base'])
  with pytest.raises(ValueError, match='seq_len=long'):
    loading.load('configs/quickstart.py', ['--config.seq_len=long'])
  with pytest.raises(ValueError, match="Unknown command line flag 'steps'"):
    loading.load('configs/quickstart.py', ['--steps=3'])
  with pytest.raises(ValueError, match='not --config'):
    loading.load('configs/quickstart.py', ['stray'])
