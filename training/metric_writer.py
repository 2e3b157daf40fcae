"""Training logs: a console progress line, TensorBoard events and metrics.jsonl.

Only process 0 writes. `DIR/metrics.jsonl` holds one JSON object per logged
step (step, loss, learning_rate, tokens_per_sec, mfu, ...); a resumed run
first drops the records of the steps after its checkpoint (`truncate_after`), then
appends, so the file reads as one run with each step once. Every line is strict JSON:
a NaN or infinite figure is written as null and named in the record's `nonfinite`
list (TensorBoard still gets the float).
"""

import json
import math
import os
import sys
import time

import jax


def _summary_writer_class():
  """tensorboardX's SummaryWriter (no TensorFlow needed), imported only where logs are
  written. tensorboardX tries `import torch` at import time for tensors that never reach
  it here; where PyTorch is installed that costs seconds at every start (3.4 s measured),
  so torch is hidden from that one import unless it is loaded already."""
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter  # Deferred: only process 0 writes TensorBoard.

    return SummaryWriter
  sys.modules['torch'] = None  # `import torch` now raises ImportError, as without PyTorch.
  try:
    from tensorboardX import SummaryWriter  # Deferred: only process 0 writes TensorBoard.
  finally:
    del sys.modules['torch']
  return SummaryWriter


def json_record(step: int, scalars: dict[str, float], prefix: str = '') -> str:
  """One metrics.jsonl line (no newline): strict JSON, a non-finite figure as null with
  its name in `nonfinite` (json.dumps would write NaN / Infinity, which strict JSON
  readers, jq and most non-Python parsers, refuse)."""
  record, nonfinite = {'step': step}, []
  for name, value in scalars.items():
    value = float(value)
    if not math.isfinite(value):
      nonfinite.append(prefix + name)
      value = None
    record[prefix + name] = value
  if nonfinite:
    record['nonfinite'] = nonfinite
  return json.dumps(record, allow_nan=False)


def _after(line: str, step: int) -> bool:
  """Whether a metrics.jsonl line is the record of a step after `step` (False for a line
  that does not parse or has no step: kept, not judged)."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return False
  return isinstance(record, dict) and isinstance(record.get('step'), int) and record['step'] > step


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


class MetricWriter:
  """Writes scalars to the console, TensorBoard and metrics.jsonl (process 0 only)."""

  def __init__(self, workdir: str, total_steps: int, enabled: bool | None = None):
    self._enabled = jax.process_index() == 0 if enabled is None else enabled
    self._total = total_steps
    self._jsonl = None
    self._tb = None
    self._path = os.path.join(workdir, 'metrics.jsonl')
    if self._enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(self._path, 'a')
      self._tb = _summary_writer_class()(os.path.join(workdir, 'tensorboard'))
    self._start = time.time()

  def info(self, message: str):
    if self._enabled:
      print(message, flush=True)

  def write(self, step: int, scalars: dict[str, float], prefix: str = ''):
    """Logs `scalars` at `step`; `prefix` ('eval/') marks evaluation figures."""
    if not self._enabled:
      return
    self._jsonl.write(json_record(step, scalars, prefix) + '\n')
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(prefix + name, value, step)
    self._tb.flush()

  def progress(self, step: int, scalars: dict[str, float], seconds_per_step: float):
    """One console line: a bar, loss, learning rate, tokens/s, MFU and ETA."""
    if not self._enabled:
      return
    width = 20
    done = int(width * step / max(self._total, 1))
    bar = '#' * done + '.' * (width - done)
    eta = _duration((self._total - step) * seconds_per_step)
    fields = [
      f'step {step}/{self._total} [{bar}]',
      f'loss {scalars["loss"]:.4f}',
      *([f'acc {scalars["accuracy"]:.3f}'] if 'accuracy' in scalars else []),
      *([f'len {int(scalars["row_length"])}'] if 'row_length' in scalars else []),
      f'lr {scalars["learning_rate"]:.2e}',
      f'{scalars["tokens_per_sec"]:,.0f} tok/s',
      *(
        [f'input {scalars["input_tokens_per_sec"]:,.0f} tok/s']
        if 'input_tokens_per_sec' in scalars
        else []
      ),
      f'mfu {100 * scalars["mfu"]:.2f}%',
      f'eta {eta}',
    ]
    print(' | '.join(fields), file=sys.stdout, flush=True)

  def truncate_after(self, step: int) -> int:
    """Drops the records of steps after `step` from metrics.jsonl; returns how many.

    A run resumed from its checkpoint of `step` logs the later steps again; without
    this the file would hold them twice (the killed run's and the resumed run's).
    Evaluation records (`eval/...`) at or before `step` stay. The file is rewritten to a
    temporary file that replaces it at once (os.replace), so a kill in the middle leaves
    the old file whole. A last line without its newline (a write cut by a kill) is
    dropped too; other lines that do not parse are kept as they are.
    """
    if not self._enabled or not os.path.exists(self._path):
      return 0
    self._jsonl.close()
    with open(self._path) as f:
      lines = f.readlines()
    read = len(lines)
    if lines and not lines[-1].endswith('\n'):
      lines.pop()  # Torn by a kill mid-write.
    kept = [line for line in lines if not _after(line, step)]
    temporary = self._path + '.tmp'
    with open(temporary, 'w') as f:
      f.writelines(kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, self._path)
    self._jsonl = open(self._path, 'a')
    return read - len(kept)

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._tb.close()
