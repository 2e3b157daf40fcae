"""Files that appear whole or not at all: written beside their path, flushed to disk,
then renamed over it (`os.replace` is atomic on one file system), so a process killed in
the middle leaves the previous file, or none, never half of one. For the reports the
evaluation commands write (eval.json, heads.json, attributions.json, pages)."""

import json
import os
import tempfile

import numpy as np


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', dir=directory)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_npz(path: str, arrays: dict) -> None:
  """Writes NumPy `arrays` ({name: array}) as an .npz file at `path` atomically."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.npz', dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, value, indent: int = 1) -> None:
  """Writes `value` as JSON to `path` atomically."""
  write_text(path, json.dumps(value, indent=indent) + '\n')
