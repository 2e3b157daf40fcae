"""The direction of imports: data <- models <- objectives <- training <- evaluation <- entry points.

Every module's imports are parsed (function-level ones included, and
`importlib.import_module('literal')`): a module may import its own layer and the
layers below it, never one above, and no two modules may import each other, however
indirectly. Entry points (train.py, eval.py, configs/, bench/, tools/, tests/ and any
package's `__main__.py`) may import every layer. A project import inside a function
is allowed only where it defers a heavy optional dependency, and then it carries a
comment saying so.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ('data', 'models', 'objectives', 'training', 'evaluation')
ENTRY = len(LAYERS)
PROJECT = (*LAYERS, 'configs', 'bench', 'tools', 'tests', 'train', 'eval', 'compress')
_SKIPPED_DIRS = {'.git', '.venv', '.venv-ci', '__pycache__', '.ruff_cache', '.pytest_cache'}


def _module_files() -> dict[str, str]:
  """{dotted module name: path} of every Python file of the project."""
  found = {}
  for directory, subdirs, files in os.walk(ROOT):
    subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS and not d.startswith('.')]
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      parts = os.path.relpath(path, ROOT)[: -len('.py')].split(os.sep)
      if parts[0] not in PROJECT:
        continue
      if parts[-1] == '__init__':
        parts = parts[:-1]
      found['.'.join(parts)] = path
  return found


MODULES = _module_files()


def layer(module: str) -> int:
  """The layer index of `module`; entry points are above every layer."""
  if module.split('.')[-1] == '__main__':
    return ENTRY
  top = module.split('.')[0]
  return LAYERS.index(top) if top in LAYERS else ENTRY


def _target(name: str) -> str | None:
  """The project module that importing `name` loads (a module, or its package)."""
  parts = name.split('.')
  while parts:
    candidate = '.'.join(parts)
    if candidate in MODULES:
      return candidate
    parts.pop()
  return None


def _imported_names(module: str, node: ast.AST, is_package: bool) -> list[str]:
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if isinstance(node, ast.ImportFrom):
    base = node.module or ''
    if node.level:
      parts = module.split('.') if is_package else module.split('.')[:-1]
      parts = parts[: len(parts) - (node.level - 1)]
      base = '.'.join([*parts, *([base] if base else [])])
    return [f'{base}.{alias.name}' for alias in node.names]
  # importlib.import_module('a.b') with a literal name.
  func = node.func
  if (
    isinstance(func, ast.Attribute)
    and func.attr == 'import_module'
    and node.args
    and isinstance(node.args[0], ast.Constant)
    and isinstance(node.args[0].value, str)
  ):
    return [node.args[0].value]
  return []


def _imports(module: str) -> list[tuple[str, int, bool, str]]:
  """[(imported project module, line, inside a function, source line + the one above)]."""
  path = MODULES[module]
  with open(path, encoding='utf-8') as f:
    source = f.read()
  lines = source.splitlines()
  tree = ast.parse(source, path)
  is_package = path.endswith('__init__.py')
  found = []

  def visit(node, in_function: bool):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.Import | ast.ImportFrom | ast.Call):
        for name in _imported_names(module, child, is_package):
          target = _target(name)
          if target is not None and target != module:
            context = '\n'.join(lines[max(child.lineno - 2, 0) : child.end_lineno])
            found.append((target, child.lineno, in_function, context))
      nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
      visit(child, in_function or nested)

  visit(tree, False)
  return found


IMPORTS = {module: _imports(module) for module in sorted(MODULES)}


def test_the_layers_exist_and_hold_modules():
  for name in LAYERS:
    assert name in MODULES, f'{name}/ is not a package'
    assert any(m.startswith(name + '.') for m in MODULES), f'{name}/ holds no module'


@pytest.mark.parametrize('name', LAYERS)
def test_no_import_from_a_higher_layer(name):
  upward = [
    f'{module}:{line} imports {target} ({LAYERS[layer(target)] if layer(target) < ENTRY else "an entry point"})'
    for module, imports in IMPORTS.items()
    if module.split('.')[0] == name and layer(module) < ENTRY
    for target, line, _, _ in imports
    if layer(target) > layer(module)
  ]
  assert not upward, '\n'.join(upward)


def _cycles() -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  graph = {m: sorted({t for t, *_ in IMPORTS[m]}) for m in IMPORTS}
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def connect(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in graph:
    if v not in index:
      connect(v)
  return found


def test_no_import_cycle():
  cycles = _cycles()
  assert not cycles, 'modules that import each other: ' + '; '.join(' <-> '.join(c) for c in cycles)


def test_project_imports_inside_functions_defer_a_heavy_dependency_and_say_so():
  bare = [
    f'{module}:{line} imports {target} inside a function with no comment saying why'
    for module, imports in IMPORTS.items()
    if layer(module) < ENTRY or module in ('train', 'eval', 'compress')
    for target, line, in_function, context in imports
    if in_function and '#' not in context
  ]
  assert not bare, '\n'.join(bare)


def test_the_checker_sees_upward_and_function_level_imports(tmp_path):
  """The parser finds what the checks rely on: relative, aliased, function-level and
  importlib imports (so a clean result above means something)."""
  source = (
    'import importlib\n'
    'from . import loader\n'
    'from training import trainer as t\n'
    'def f():\n'
    '  from evaluation import loop\n'
    "  return importlib.import_module('objectives.mlm')\n"
  )
  path = tmp_path / 'probe.py'
  path.write_text(source)
  MODULES['data.probe'] = str(path)
  try:
    found = {(t, in_f) for t, _, in_f, _ in _imports('data.probe')}
  finally:
    del MODULES['data.probe']
  assert ('data.loader', False) in found
  assert ('training.trainer', False) in found
  assert ('evaluation', True) in found or ('evaluation.loop', True) in found
  assert ('objectives.mlm', True) in found
