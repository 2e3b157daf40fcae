"""Helpers for tests that start train.py / eval.py as subprocesses."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A run small enough for a 2-core CPU: bert-tiny, 8 rows of 64 tokens.
TINY_OVERRIDES = (
  '--config.batch_size=8',
  '--config.seq_len=64',
  '--config.log_every_steps=1',
  '--config.eval_every_steps=0',
  '--config.optimizer.warmup_steps=2',
  '--config.optimizer.warmup_ratio=0',
  '--config.peak_flops_per_device=1e9',
)


def env(devices: int = 1, optimized: bool = False) -> dict:
  """The test environment (tests/conftest.py: compile flags, compilation cache) with
  `devices` emulated CPU devices; `optimized` compiles at XLA's default level (and fusion
  emitters), for a run that executes long enough to gain from it."""
  environ = dict(os.environ)
  flags = re.sub(
    r'--xla_force_host_platform_device_count=\d+',
    f'--xla_force_host_platform_device_count={devices}',
    environ.get('XLA_FLAGS', ''),
  )
  if optimized:  # tests/conftest.py's compile-time flags off.
    flags = re.sub(r'--xla_backend_optimization_level=\d+', '', flags)
    flags = flags.replace('--xla_cpu_use_fusion_emitters=false', '')
  environ['XLA_FLAGS'] = flags
  environ['JAX_PLATFORMS'] = 'cpu'
  environ['PYTHONPATH'] = ROOT
  return environ


def command(script: str, workdir: str, *overrides: str, config='configs/quickstart.py') -> list:
  return [sys.executable, os.path.join(ROOT, script), f'--config={os.path.join(ROOT, config)}',
          f'--workdir={workdir}', *overrides]  # fmt: skip


def run(
  script: str,
  workdir: str,
  *overrides: str,
  devices: int = 1,
  check: bool = True,
  optimized: bool = False,
):
  result = subprocess.run(
    command(script, workdir, *overrides),
    env=env(devices, optimized),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  if check and result.returncode != 0:
    raise AssertionError(f'{script} failed ({result.returncode}):\n{result.stderr[-4000:]}')
  return result


def losses(workdir: str) -> dict[int, float]:
  """{step: loss} from metrics.jsonl; a resumed run's later line for a step wins."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if 'loss' in record:
        out[record['step']] = record['loss']
  return out
