"""Training logs: a console progress line, TensorBoard events and metrics.jsonl.

Only process 0 writes. `DIR/metrics.jsonl` holds one JSON object per logged
step (step, loss, learning_rate, tokens_per_sec, mfu, ...); a resumed run
appends to it, so the file reads as one run.
"""

import json
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
    if self._enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self._tb = _summary_writer_class()(os.path.join(workdir, 'tensorboard'))
    self._start = time.time()

  def info(self, message: str):
    if self._enabled:
      print(message, flush=True)

  def write(self, step: int, scalars: dict[str, float], prefix: str = ''):
    """Logs `scalars` at `step`; `prefix` ('eval/') marks evaluation figures."""
    if not self._enabled:
      return
    record = {'step': step, **{prefix + k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
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

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._tb.close()
