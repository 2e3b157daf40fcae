"""FSDP across hosts: four processes on 127.0.0.1 (gloo collectives, 2 CPU devices each)
train on one (data=1, fsdp=8) mesh, so every process holds only its quarter of each
parameter sharded over `embed`, and match one process with 8 devices on the same mesh,
loss by loss.

The processes start the way scripts/slurm_gpu.sbatch starts them: `train.py
--distributed` with no address, and JAX's Slurm detection reads the job from
SLURM_* variables (faked here; JAX_COORDINATOR_PORT picks a free port instead of the one
derived from the job id). Run as a script, this file is train.py plus a probe that
prints, at the first checkpoint save, which blocks of each parameter this process holds.
"""

import json
import math
import subprocess
import sys

import jax
import portpicker
import pytest

from tests.training import runs

PROCESSES, DEVICES_PER_PROCESS = 4, 2
PROBE = 'PARAM_BLOCKS '

OVERRIDES = (
  *runs.TINY_OVERRIDES,
  '--config.total_steps=4',
  '--config.checkpoint_every_steps=4',
  '--config.mesh.data=1',
  '--config.mesh.fsdp=-1',  # All 8 devices: the fsdp axis spans the 4 processes.
  '--config.mesh.tensor=1',
  '--config.mesh.strategy=fsdp',
  f'--config.data.num_shards={PROCESSES}',  # The same batches on 1 or 4 hosts.
)


def _slurm_env(process_id: int, port: int) -> dict:
  env = {
    k: v
    for k, v in runs.env(devices=DEVICES_PER_PROCESS).items()
    # Whatever cluster this test itself runs in: JAX would detect Open MPI before Slurm.
    if not k.startswith(('SLURM_', 'OMPI_', 'JAX_COORDINATOR_', 'JAX_LOCAL_DEVICE_IDS'))
  }
  env.update(
    SLURM_JOB_ID='4242',
    SLURM_STEP_NODELIST='127.0.0.1',
    SLURM_NTASKS=str(PROCESSES),
    SLURM_PROCID=str(process_id),
    SLURM_LOCALID=str(process_id),  # Only picks visible GPUs; CPU devices ignore it.
    JAX_COORDINATOR_PORT=str(port),
  )
  return env


@pytest.mark.slow
def test_four_processes_shard_params_across_hosts_and_match_one(tmp_path, spm_path):
  overrides = (*OVERRIDES, f'--config.data.tokenizer_path={spm_path}')
  single = str(tmp_path / 'single')
  runs.run('train.py', single, *overrides, devices=PROCESSES * DEVICES_PER_PROCESS)

  multi = str(tmp_path / 'multi')
  port = portpicker.pick_unused_port()
  command = runs.command('train.py', multi, *overrides, '--distributed')
  command[1] = __file__  # This file as the script: train.py with the probe.
  procs = [
    subprocess.Popen(
      command,
      env=_slurm_env(i, port),
      cwd=runs.ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(PROCESSES)
  ]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err[-4000:]
  (mesh_line,) = [line for line in outputs[0][0].splitlines() if '| mesh {' in line]
  assert "'data': 1, 'fsdp': 8," in mesh_line and '} | 4 process(es)' in mesh_line, mesh_line

  # Each process holds its own quarter of every parameter sharded over `embed` (the
  # quarters tile the array) and, over all parameters, about a quarter of them (the small
  # replicated ones, biases over heads or mlp, add 1.6%).
  probes = [_probe(out) for out, _ in outputs]
  assert [p['process'] for p in probes] == list(range(PROCESSES))
  shapes = {path: leaf['shape'] for path, leaf in probes[0]['params'].items()}
  held = [  # [process] {path: flat indices of the elements the process holds}
    {path: _cells(leaf['blocks'], shapes[path]) for path, leaf in p['params'].items()}
    for p in probes
  ]
  sharded = [path for path in shapes if len(held[0][path]) < math.prod(shapes[path])]
  for path in ('encoder/embed/token/embedding', 'encoder/block_0/mlp/wi/kernel'):
    assert path in sharded, (path, sorted(shapes))
  for path in sharded:
    for cells in held:
      assert len(cells[path]) * PROCESSES == math.prod(shapes[path]), path
    assert set().union(*(cells[path] for cells in held)) == set(range(math.prod(shapes[path])))
  total = sum(math.prod(shape) for shape in shapes.values())
  for process, cells in enumerate(held):
    mine = sum(len(c) for c in cells.values())
    print(f'process {process} holds {mine} of {total} parameters ({mine / total:.3f})')
    assert mine < 1.05 * total / PROCESSES, (process, mine, total)

  expected, got = runs.losses(single), runs.losses(multi)
  assert sorted(got) == [1, 2, 3, 4]
  for step in got:
    assert got[step] == pytest.approx(expected[step], abs=1e-5)


def _probe(stdout: str) -> dict:
  lines = [line for line in stdout.splitlines() if line.startswith(PROBE)]
  assert lines, stdout[-2000:]
  return json.loads(lines[0][len(PROBE) :])


def _cells(blocks: list, shape: list) -> set:
  """Flat indices of the elements covered by `blocks` ([[start, stop] per axis])."""
  cells = set()
  for block in blocks:
    flat = [0]
    for (start, stop), dim in zip(block, shape, strict=True):
      flat = [f * dim + i for f in flat for i in range(start, stop)]
    cells.update(flat)
  return cells


def _param_blocks(params) -> dict:
  """{path: {'shape', 'blocks'}}: the distinct index blocks this process holds."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    blocks = {
      tuple(
        (s.start or 0, dim if s.stop is None else s.stop)
        for s, dim in zip(shard.index, leaf.shape, strict=True)
      )
      for shard in leaf.addressable_shards
    }
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    out[name] = {'shape': list(leaf.shape), 'blocks': sorted(blocks)}
  return out


if __name__ == '__main__':
  from absl import app

  import train
  from training import checkpointing

  save = checkpointing.Checkpointer.save
  probed = []

  def probing_save(self, step, state, *args, **kwargs):
    if not probed:
      probed.append(step)
      record = {'process': jax.process_index(), 'params': _param_blocks(state.params)}
      print(PROBE + json.dumps(record), flush=True)
    return save(self, step, state, *args, **kwargs)

  checkpointing.Checkpointer.save = probing_save
  sys.argv[0] = train.__file__
  app.run(train.main)
