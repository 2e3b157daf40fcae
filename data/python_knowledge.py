"""An embedded knowledge graph about Python, read from the running interpreter (no file, no
network): the knowledge objectives' default, as the pydoc topics are the corpus's
(data/pydoc_topics.py).

Triples, from the `builtins` module in name order: every class's direct bases,
(ValueError, subclass of, Exception), and every built-in function,
(len, is a, built-in function). Descriptions: the first line of each object's docstring
(the function's signature line skipped), or its name when it has none. A few hundred
triples; the same interpreter version gives the same graph.
"""

import builtins
import inspect


def _first_line(obj) -> str:
  doc = inspect.getdoc(obj) or ''
  lines = [line.strip() for line in doc.splitlines() if line.strip()]
  if lines and callable(obj) and not isinstance(obj, type) and '(' in lines[0]:
    lines = lines[1:]  # A built-in function's docstring opens with its signature.
  return lines[0] if lines else ''


def triples() -> list[tuple[str, str, str]]:
  """[(head, relation, tail)] of the built-in classes' bases and the built-in functions."""
  out = []
  for name in sorted(dir(builtins)):
    if name.startswith('_'):
      continue
    obj = getattr(builtins, name)
    if isinstance(obj, type):
      out += [(name, 'subclass of', base.__name__) for base in obj.__bases__]
    elif inspect.isbuiltin(obj):
      out.append((name, 'is a', 'built-in function'))
  return out


def descriptions() -> dict[str, str]:
  """{name: description} of every entity of `triples` that has a docstring."""
  out = {}
  for name in sorted(dir(builtins)):
    text = _first_line(getattr(builtins, name)) if not name.startswith('_') else ''
    if text:
      out[name] = text
  return out
