"""metrics.jsonl stays strict JSON (a NaN is null, flagged) and a resumed run's rewrite of
it keeps each step once, surviving a kill in the middle."""

import glob
import json
import math
import os
import signal
import struct
import subprocess
import sys

import pytest
from tensorboardX.proto import event_pb2

from training import metric_writer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _strict(line: str) -> dict:
  """json.loads that refuses NaN / Infinity, as strict JSON readers do."""

  def refuse(constant):
    raise ValueError(f'non-standard JSON constant {constant}')

  return json.loads(line, parse_constant=refuse)


def _records(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [_strict(line) for line in f]


def _tensorboard_scalars(workdir) -> dict[tuple[str, int], float]:
  """{(tag, step): value} from the event files (TFRecord framing: length, its crc, the
  Event proto, its crc)."""
  out = {}
  for path in glob.glob(os.path.join(workdir, 'tensorboard', 'events.*')):
    with open(path, 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset : offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        out[value.tag, event.step] = value.simple_value
  return out


def test_nonfinite_figures_are_null_and_flagged_and_tensorboard_keeps_them(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path), total_steps=10, enabled=True)
  writer.write(1, {'loss': 2.5, 'grad_norm': 1.0})
  writer.write(2, {'loss': math.nan, 'grad_norm': math.inf, 'accuracy': 0.5})
  writer.write(2, {'loss': -math.inf}, prefix='eval/')
  writer.close()
  first, second, evaluation = _records(tmp_path)
  assert first == {'step': 1, 'loss': 2.5, 'grad_norm': 1.0}  # No flag when all finite.
  assert second == {
    'step': 2,
    'loss': None,
    'grad_norm': None,
    'accuracy': 0.5,
    'nonfinite': ['loss', 'grad_norm'],
  }
  assert evaluation == {'step': 2, 'eval/loss': None, 'nonfinite': ['eval/loss']}
  scalars = _tensorboard_scalars(tmp_path)
  assert math.isnan(scalars['loss', 2]) and scalars['grad_norm', 2] == math.inf
  assert scalars['eval/loss', 2] == -math.inf and scalars['loss', 1] == 2.5


def _killed_run_log(workdir):
  """metrics.jsonl of a run killed after step 6 that checkpointed step 3: its later steps,
  an evaluation after the checkpoint, and a last line cut by the kill."""
  lines = [
    *(json.dumps({'step': s, 'loss': 5.0 - s}) for s in range(1, 7)),
    json.dumps({'step': 3, 'eval/loss': 4.5}),
    json.dumps({'step': 6, 'eval/loss': 4.0}),
    'NaN-era line {',  # Not JSON: kept as it is, not judged.
  ]
  text = '\n'.join(lines) + '\n{"step": 7, "lo'
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(text)
  return text


def test_truncate_after_keeps_each_step_once(tmp_path):
  _killed_run_log(tmp_path)
  writer = metric_writer.MetricWriter(str(tmp_path), total_steps=10, enabled=True)
  assert writer.truncate_after(3) == 5  # Steps 4, 5, 6, eval at 6 and the torn line.
  for step in range(4, 7):  # The resumed run logs them again.
    writer.write(step, {'loss': 9.0})
  writer.close()
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    lines = f.read().splitlines()
  assert lines[-4] == 'NaN-era line {'
  records = [json.loads(line) for line in lines if line.startswith('{')]
  steps = [r['step'] for r in records if 'loss' in r]
  assert steps == [1, 2, 3, 4, 5, 6]
  assert [r['loss'] for r in records if 'loss' in r][3:] == [9.0] * 3
  assert [r for r in records if 'eval/loss' in r] == [{'step': 3, 'eval/loss': 4.5}]
  assert not os.path.exists(os.path.join(tmp_path, 'metrics.jsonl.tmp'))


def test_truncate_after_without_a_file_or_on_other_processes_does_nothing(tmp_path):
  assert metric_writer.MetricWriter(str(tmp_path / 'a'), 10, enabled=True).truncate_after(0) == 0
  _killed_run_log(tmp_path)
  assert metric_writer.MetricWriter(str(tmp_path), 10, enabled=False).truncate_after(0) == 0
  assert len(open(os.path.join(tmp_path, 'metrics.jsonl')).read().splitlines()) == 10


# Run in a subprocess: the rewrite is killed (SIGKILL) at `where`, before the new file
# replaces the old one.
_KILL_MID_REWRITE = """
import os, signal, sys
from training import metric_writer
def die(*args):
  os.kill(os.getpid(), signal.SIGKILL)
setattr(os, sys.argv[2], die)
metric_writer.MetricWriter(sys.argv[1], 10, enabled=True).truncate_after(3)
"""


@pytest.mark.parametrize('where', ['fsync', 'replace'])
def test_a_kill_mid_rewrite_leaves_the_old_file_whole(tmp_path, where):
  before = _killed_run_log(tmp_path)
  killed = subprocess.run(
    [sys.executable, '-c', _KILL_MID_REWRITE, str(tmp_path), where],
    env=dict(os.environ, PYTHONPATH=ROOT),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    assert f.read() == before
  assert os.path.exists(os.path.join(tmp_path, 'metrics.jsonl.tmp'))  # Really mid-rewrite.
  # The restarted run rewrites it (over the stale temporary file).
  writer = metric_writer.MetricWriter(str(tmp_path), 10, enabled=True)
  assert writer.truncate_after(3) == 5
  writer.close()
  assert [json.loads(x)['step'] for x in open(os.path.join(tmp_path, 'metrics.jsonl'))
          if x.startswith('{')] == [1, 2, 3, 3]  # fmt: skip
