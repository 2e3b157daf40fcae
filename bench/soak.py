"""Soak: the quickstart killed again and again, and one checkpoint corrupted, must end
bit-identical to a run that was never interrupted.

  python -m bench.soak --kills 10 --steps 200 [--checkpoint-every 20] [--seed 0] \\
      [--workdir DIR] [--json FILE] [--set batch_size=8 --set seq_len=64 ...]

First an uninterrupted reference run of train.py (configs/quickstart.py, shortened to
`--steps`, logging every step, evaluation off), then the soak run in another workdir:
train.py is started, and once it has logged a chosen step it is sent SIGKILL (a crash:
everything since the last complete checkpoint is redone) or SIGTERM (a preemption
notice: the step is finished, checkpointed, and the run exits 0), as many of each, in a
random order;
about half of the chosen steps are checkpoint steps, so the kill lands while the async
save of that step is being written. After the middle kill, 8 bytes of the newest
checkpoint's largest array file are flipped: the restart must notice, move that
checkpoint aside and resume from the previous one. The last start runs to the end.

Reported: per start, the signal, the step it reached, the step it resumed from and the
steps redone; in all, steps lost to SIGKILL, to SIGTERM (must be 0) and to the
corruption; training steps logged twice in metrics.jsonl (must be 0); and whether the
final state (params and optimizer state) and every logged loss equal the reference run's
bit for bit (they must). Exit status 0 only when all of that holds.
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from training import checkpointing, integrity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough that a 200-step soak with 10 restarts takes minutes on a 2-core CPU.
DEFAULT_SETTINGS = ('batch_size=8', 'seq_len=64', 'eval_every_steps=0', 'log_every_steps=1')
_STEP_LINE = re.compile(r'^step (\d+)/\d+ ')
_RESUMED = re.compile(r'Resumed from step (\d+)')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kills', type=int, default=10, help='Interruptions of the soak run.')
  parser.add_argument('--steps', type=int, default=200, help='Training steps of each run.')
  parser.add_argument(
    '--checkpoint-every', type=int, default=0, help='Checkpoint cadence (0: steps / 10).'
  )
  parser.add_argument('--seed', type=int, default=0, help='Chooses the kill steps and signals.')
  parser.add_argument('--no-corruption', action='store_true', help='Skip the flipped bytes.')
  parser.add_argument('--config', default='configs/quickstart.py', help='Config file to run.')
  parser.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='KEY=VALUE',
    help=f'Config overrides, after the defaults {", ".join(DEFAULT_SETTINGS)}.',
  )
  parser.add_argument('--workdir', default='', help='Where both runs go (default: a temp dir).')
  parser.add_argument('--json', default='', help='Also write the report to this file.')
  args = parser.parse_args(argv)
  if args.steps < 4 or args.kills < 0 or args.kills > args.steps - 2:
    parser.error('--steps must be >= 4 and --kills between 0 and steps - 2.')
  return args


def plan_kills(rng: random.Random, kills: int, steps: int, every: int) -> list[tuple[int, str]]:
  """[(step, signal name)]: distinct steps in [1, steps - 1], about half of them checkpoint
  steps (the kill then meets that step's async save), in increasing order; half SIGKILL,
  half SIGTERM."""
  saves = [s for s in range(every, steps, every)]
  others = [s for s in range(1, steps) if s % every]
  chosen = set(rng.sample(saves, min(len(saves), kills // 2)))
  chosen |= set(rng.sample(others, kills - len(chosen)))
  signals = ['SIGKILL', 'SIGTERM'] * (kills // 2) + [rng.choice(('SIGKILL', 'SIGTERM'))] * (
    kills % 2
  )
  rng.shuffle(signals)  # As many of each (one more of either for an odd count), in any order.
  return list(zip(sorted(chosen), signals, strict=True))


def train_command(args, workdir: str, every: int) -> list[str]:
  settings = (*DEFAULT_SETTINGS, f'total_steps={args.steps}', f'checkpoint_every_steps={every}')
  return [
    sys.executable,
    os.path.join(REPO, 'train.py'),
    f'--config={os.path.join(REPO, args.config)}',
    f'--workdir={workdir}',
    *(f'--config.{s}' for s in (*settings, *args.set)),
  ]


def start(command: list[str], kill_at: tuple[int, str] | None) -> dict:
  """Runs train.py until it ends, or until it logged step `kill_at[0]`, then signals it."""
  began = time.time()
  proc = subprocess.Popen(
    command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  lines, reached, resumed = [], 0, 0
  for line in proc.stdout:
    lines.append(line)
    if match := _RESUMED.search(line):
      resumed = int(match.group(1))
    if match := _STEP_LINE.match(line):
      reached = int(match.group(1))
      if kill_at is not None and reached >= kill_at[0]:
        proc.send_signal(getattr(signal, kill_at[1]))
        break
  out, err = proc.communicate(timeout=3600)
  lines += out.splitlines(keepends=True)
  for line in lines:  # A SIGTERM'd run logs the steps it finished after the signal.
    if match := _STEP_LINE.match(line):
      reached = max(reached, int(match.group(1)))
    if match := _RESUMED.search(line):
      resumed = int(match.group(1))
  return {
    'signal': kill_at[1] if kill_at else None,
    'kill_step': kill_at[0] if kill_at else None,
    'resumed_from': resumed,
    'reached': reached,
    'returncode': proc.returncode,
    'seconds': time.time() - began,
    'fallback_lines': [line.strip() for line in lines + err.splitlines() if '.corrupt' in line],
    'stderr_tail': err[-2000:],
  }


def flip_bytes(workdir: str) -> str:
  """Flips 8 bytes in the middle of the newest checkpoint's largest state file."""
  root = os.path.join(workdir, 'checkpoints')
  newest = max((d for d in os.listdir(root) if d.isdigit()), key=int)
  files = [
    os.path.join(folder, name)
    for folder, _, names in os.walk(os.path.join(root, newest, 'state'))
    for name in names
  ]
  path = max(files, key=os.path.getsize)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    data = f.read(8)
    f.seek(-len(data), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in data))
  return path


def final_state(workdir: str) -> tuple[int, dict]:
  """(step, {leaf name: array}) of the newest checkpoint's whole state, as saved, read
  through the project's checkpointer (its digests verified)."""
  checkpointer = checkpointing.Checkpointer(workdir, keep=0, save_every=1, read_only=True)
  step = checkpointer.latest_step()
  state, _, _ = checkpointer.restore_as_saved(step)
  checkpointer.close()
  named = jax.tree_util.tree_flatten_with_path(state)[0]
  return step, {integrity.leaf_name(path): np.asarray(x) for path, x in named}


def logged_losses(workdir: str) -> list[tuple[int, float]]:
  """[(step, loss)] of metrics.jsonl's training records, in file order."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return [(r['step'], r['loss']) for r in records if 'loss' in r]


def soak(args) -> dict:
  every = args.checkpoint_every or max(args.steps // 10, 1)
  root = args.workdir or tempfile.mkdtemp(prefix='plm-flax-soak-')
  reference, soaked = os.path.join(root, 'reference'), os.path.join(root, 'soak')
  for path in (reference, soaked):
    if os.path.exists(path):
      raise SystemExit(f'{path} exists: give an empty --workdir.')
  rng = random.Random(args.seed)
  kills = plan_kills(rng, args.kills, args.steps, every)
  corrupt_after = None if args.no_corruption or not kills else len(kills) // 2

  print(f'Reference: {args.steps} uninterrupted steps in {reference}', flush=True)
  ref = start(train_command(args, reference, every), None)
  if ref['returncode'] != 0:
    raise SystemExit(f'The reference run failed:\n{ref["stderr_tail"]}')

  starts, corrupted = [], None
  for i, kill_at in enumerate([*kills, None]):
    record = start(train_command(args, soaked, every), kill_at)
    starts.append(record)
    print(
      f'start {i + 1}: resumed from {record["resumed_from"]}, reached {record["reached"]}, '
      f'{record["signal"] or "ran to the end"} (exit {record["returncode"]}, '
      f'{record["seconds"]:.0f} s)',
      flush=True,
    )
    if i == corrupt_after:
      corrupted = flip_bytes(soaked)
      print(f'  flipped 8 bytes of {corrupted}', flush=True)
  lost = collections.Counter()
  for i, (before, after) in enumerate(zip(starts, starts[1:], strict=False)):
    after['redone'] = before['reached'] - after['resumed_from']
    lost['corruption' if i == corrupt_after and corrupted else before['signal']] += after['redone']

  steps_logged = [s for s, _ in logged_losses(soaked)]
  repeated = sorted(s for s, n in collections.Counter(steps_logged).items() if n > 1)
  ref_step, ref_state = final_state(reference)
  soak_step, soak_state = final_state(soaked)
  differing = sorted(
    k
    for k in ref_state.keys() | soak_state.keys()
    if k not in ref_state or k not in soak_state or not np.array_equal(ref_state[k], soak_state[k])
  )
  expected_codes = {None: 0, 'SIGTERM': 0, 'SIGKILL': -signal.SIGKILL}
  unexpected_exits = [
    i + 1 for i, r in enumerate(starts) if r['returncode'] != expected_codes[r['signal']]
  ]
  report = {
    'steps': args.steps,
    'checkpoint_every': every,
    'kills': len(kills),
    'sigkills': sum(r['signal'] == 'SIGKILL' for r in starts),
    'sigterms': sum(r['signal'] == 'SIGTERM' for r in starts),
    'kills_at_checkpoint_steps': sum(s % every == 0 for s, _ in kills),
    'corrupted_file': corrupted,
    'steps_redone_after_sigkill': lost['SIGKILL'],
    'steps_redone_after_sigterm': lost['SIGTERM'],
    'steps_redone_after_corruption': lost['corruption'],
    'fallback_logged': any(r['fallback_lines'] for r in starts),
    'steps_logged_twice': repeated,
    'final_step': [ref_step, soak_step],
    'state_arrays': len(ref_state),
    'state_arrays_differing': differing,
    'losses_equal': dict(logged_losses(reference)) == dict(logged_losses(soaked)),
    'unexpected_exits': unexpected_exits,
    'starts': [{k: v for k, v in r.items() if k != 'stderr_tail'} for r in starts],
    'workdir': root,
  }
  report['passed'] = (
    ref_step == soak_step == args.steps
    and not differing
    and report['losses_equal']
    and not repeated
    and not unexpected_exits
    and lost['SIGTERM'] == 0
    and (corrupted is None or report['fallback_logged'])
  )
  return report


def main(argv=None) -> int:
  args = parse_args(argv)
  report = soak(args)
  print(
    f'\n{report["kills"]} interruptions ({report["sigkills"]} SIGKILL, {report["sigterms"]} '
    f'SIGTERM, {report["kills_at_checkpoint_steps"]} at a checkpoint step), '
    f'{"one corrupted checkpoint" if report["corrupted_file"] else "no corruption"}:'
  )
  print(
    f'  steps redone: {report["steps_redone_after_sigkill"]} after SIGKILL, '
    f'{report["steps_redone_after_sigterm"]} after SIGTERM, '
    f'{report["steps_redone_after_corruption"]} after the corruption '
    f'(fallback logged: {report["fallback_logged"]})'
  )
  print(f'  training steps logged twice in metrics.jsonl: {len(report["steps_logged_twice"])}')
  print(
    f'  final state at step {report["final_step"][1]}: '
    f'{report["state_arrays"] - len(report["state_arrays_differing"])} of '
    f'{report["state_arrays"]} arrays bit-identical to the reference run; every logged loss '
    f'equal: {report["losses_equal"]}'
  )
  print(f'  {"PASSED" if report["passed"] else "FAILED"}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(report, f, indent=2)
  return 0 if report['passed'] else 1


if __name__ == '__main__':
  sys.exit(main())
