"""Converts params (and the optimizer state that mirrors them) between the two layer layouts.

Looped (`scan_layers=False`): one subtree per layer, `block_0`, `block_1`, ...
Scanned (`scan_layers=True`): one subtree `blocks` whose leaves carry a leading
`layers` axis. Both compute the same function (tests/models/test_scan.py), so a
run may switch layouts between checkpoints:

    python -m tools.relayout --to scanned WORKDIR NEW_WORKDIR
    python train.py --config ... --workdir NEW_WORKDIR --config.model.scan_layers=true

The conversion walks any nested dict, so it applies to params and to the
optimizer state that mirrors them (Adam's moments) alike.
"""

import re

import numpy as np

_BLOCK = re.compile(r'block_(\d+)')


def _is_looped_stack(tree: dict) -> list[str]:
  """The `block_i` keys of `tree`, in layer order (empty when it has none)."""
  keys = sorted((k for k in tree if _BLOCK.fullmatch(k)), key=lambda k: int(k[6:]))
  if keys and [int(k[6:]) for k in keys] != list(range(len(keys))):
    raise ValueError(f'Layers {keys} are not numbered 0..{len(keys) - 1}.')
  return keys


def _map_tree(fn, *trees):
  """fn over the leaves of same-structure nested dicts, lists and tuples."""
  if isinstance(trees[0], dict):
    return {k: _map_tree(fn, *(t[k] for t in trees)) for k in trees[0]}
  if isinstance(trees[0], list | tuple):
    return type(trees[0])(_map_tree(fn, *parts) for parts in zip(*trees, strict=True))
  return fn(*trees)


def to_scanned(tree):
  """`block_0..block_{n-1}` subtrees -> one `blocks` subtree stacked on axis 0."""
  if isinstance(tree, list | tuple):  # E.g. the optimizer's chain of states.
    return type(tree)(to_scanned(t) for t in tree)
  if not isinstance(tree, dict):
    return tree
  keys = _is_looped_stack(tree)
  out = {k: to_scanned(v) for k, v in tree.items() if k not in keys}
  if keys:
    if 'blocks' in tree:
      raise ValueError('A stack holds both block_i and blocks subtrees.')
    out['blocks'] = _map_tree(lambda *xs: np.stack(xs), *(tree[k] for k in keys))
  return out


def to_looped(tree):
  """One `blocks` subtree stacked on axis 0 -> `block_0..block_{n-1}` subtrees."""
  if isinstance(tree, list | tuple):
    return type(tree)(to_looped(t) for t in tree)
  if not isinstance(tree, dict):
    return tree
  out = {k: to_looped(v) for k, v in tree.items() if k != 'blocks'}
  if 'blocks' in tree:
    if _is_looped_stack(tree):
      raise ValueError('A stack holds both block_i and blocks subtrees.')
    stacked = tree['blocks']
    depth = {np.shape(x)[0] for x in _leaves(stacked)}
    if len(depth) != 1:
      raise ValueError(f'Scanned leaves disagree on the number of layers: {sorted(depth)}.')
    for i in range(depth.pop()):
      out[f'block_{i}'] = _map_tree(lambda x, i=i: np.asarray(x)[i], stacked)
  return out


def _leaves(tree):
  if isinstance(tree, dict | list | tuple):
    for v in tree.values() if isinstance(tree, dict) else tree:
      yield from _leaves(v)
  else:
    yield tree


def jax_to_numpy(tree):
  """Host copies of the arrays of a restored tree (empty optimizer states stay None)."""
  return _map_tree(lambda x: None if x is None else np.asarray(x), tree)
