"""Files that appear whole or not at all: written beside their path, flushed to disk,
then renamed over it (`os.replace` is atomic on one file system), so a process killed in
the middle leaves the previous file, or none, never half of one. For the reports the
evaluation commands write (eval.json, heads.json, attributions.json, pages)."""

import json
import os
import tempfile

import numpy as np


def _write(path: str, write, binary: bool) -> None:
  """Calls `write(file)` on a temporary file beside `path`, flushes it to disk and renames
  it over `path`; a failure removes the temporary file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', dir=directory)
  try:
    with os.fdopen(fd, 'wb' if binary else 'w', **({} if binary else {'encoding': 'utf-8'})) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  _write(path, lambda f: f.write(text), binary=False)


def write_npz(path: str, arrays: dict) -> None:
  """Writes NumPy `arrays` ({name: array}) as an .npz file at `path` atomically."""
  _write(path, lambda f: np.savez(f, **arrays), binary=True)


def write_json(path: str, value, indent: int = 1) -> None:
  """Writes `value` as JSON to `path` atomically."""
  write_text(path, json.dumps(value, indent=indent) + '\n')
