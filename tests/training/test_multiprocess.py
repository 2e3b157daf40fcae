"""Two processes on 127.0.0.1 (gloo collectives, 4 CPU devices each) match one process,
and a checkpoint they write resumes in a single process (elastic resume)."""

import json
import os
import re
import shutil
import signal
import subprocess

import portpicker
import pytest

from tests.training import runs


@pytest.mark.slow
def test_two_processes_match_one_and_resume_in_one(tmp_path, spm_path):
  overrides = (
    *runs.TINY_OVERRIDES,
    '--config.total_steps=6',
    '--config.checkpoint_every_steps=3',
    '--config.eval_every_steps=6',  # Lockstep evaluation across processes, at the last step.
    '--config.data.num_shards=2',  # Fixed logical shards: the same batches on 1 or 2 hosts.
    f'--config.data.tokenizer_path={spm_path}',
  )
  single = str(tmp_path / 'single')
  runs.run('train.py', single, *overrides, devices=8)

  multi = str(tmp_path / 'multi')
  procs = _start_two_processes(multi, overrides)
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err[-4000:]
  assert '2 process(es)' in outputs[0][0] + outputs[0][1]

  expected, got = runs.losses(single), runs.losses(multi)
  assert sorted(got) == [1, 2, 3, 4, 5, 6]
  for step in got:
    assert got[step] == pytest.approx(expected[step], abs=1e-5)
  eval_single, eval_multi = _eval_record(single), _eval_record(multi)
  assert eval_multi['eval/rows'] == eval_single['eval/rows'] > 0
  assert eval_multi['eval/loss'] == pytest.approx(eval_single['eval/loss'], abs=1e-5)

  # Elastic resume: drop the 2-process run's last checkpoint and go on from its
  # step 3 in ONE process; the data state is kept per logical shard, so steps
  # 4-6 see the same batches.
  shutil.rmtree(f'{multi}/checkpoints/6')
  resumed = runs.run('train.py', multi, *overrides, devices=8)
  assert 'Resumed from step 3' in resumed.stdout + resumed.stderr
  again = runs.losses(multi)  # The resumed run's lines for steps 4-6 win.
  for step in (4, 5, 6):
    assert again[step] == pytest.approx(expected[step], abs=1e-5)


def _eval_record(workdir: str) -> dict:
  with open(f'{workdir}/metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if 'eval/loss' in r][0]


@pytest.mark.slow
def test_two_process_fine_tuning_scores_every_dev_example_once(tmp_path, spm_path):
  """GLUE fine-tuning on 2 processes: the per-example predictions of both hosts' shards
  are gathered (37 dev rows over 2 shards of 4-row batches: the last batch is padded),
  and the dev score and the kept best checkpoint equal a single process's."""
  from tests.training.test_finetune import write_sst2

  write_sst2(tmp_path / 'glue', 64, 37)
  overrides = (
    '--config.batch_size=8',
    '--config.seq_len=32',
    '--config.total_steps=4',
    '--config.eval_every_steps=4',
    '--config.log_every_steps=1',
    '--config.optimizer.warmup_steps=1',
    '--config.optimizer.warmup_ratio=0',
    '--config.peak_flops_per_device=1e9',
    '--config.data.num_shards=2',
    '--config.model.num_layers=2',
    '--config.model.d_model=64',
    '--config.model.num_heads=2',
    '--config.model.mlp_dim=128',
    f'--config.data.glue_dir={tmp_path / "glue"}',
    f'--config.data.tokenizer_path={spm_path}',
  )
  config = 'configs/glue.py:sst2'
  single = str(tmp_path / 'single')
  result = subprocess.run(
    runs.command('train.py', single, *overrides, config=config),
    env=runs.env(8), cwd=runs.ROOT, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-4000:]
  multi = str(tmp_path / 'multi')
  port = portpicker.pick_unused_port()
  flags = (f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2')
  procs = [
    subprocess.Popen(
      runs.command('train.py', multi, *overrides, *flags, f'--process_id={i}', config=config),
      env=runs.env(devices=4),
      cwd=runs.ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]
  scores = {}
  for name, workdir in (('single', single), ('multi', multi)):
    with open(f'{workdir}/metrics.jsonl') as f:
      scores[name] = [json.loads(line) for line in f if 'eval/sst2' in line][0]
    assert (tmp_path / name / 'best').is_dir()
  assert scores['multi']['eval/sst2'] == pytest.approx(scores['single']['eval/sst2'], abs=1e-6)
  assert scores['multi']['eval/best_step'] == scores['single']['eval/best_step'] == 4


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_checkpoints_one_agreed_step(tmp_path, spm_path):
  """A preemption notice reaching one host only: JAX's preemption service agrees on a
  step, both processes save it and exit 0 (none left waiting in a collective)."""
  workdir = str(tmp_path / 'multi')
  overrides = (
    *runs.TINY_OVERRIDES,
    '--config.total_steps=12',
    '--config.checkpoint_every_steps=100',  # Only the preemption's checkpoint before 12.
    '--config.data.num_shards=2',
    f'--config.data.tokenizer_path={spm_path}',
  )
  procs = _start_two_processes(workdir, overrides)
  for line in procs[0].stdout:  # Process 0 logs; the notice goes to process 1.
    if line.startswith('step 4/12'):
      procs[1].send_signal(signal.SIGTERM)
      break
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs, strict=True):
    assert p.returncode == 0, err[-4000:]
  (stopped,) = re.findall(r'A preemption notice .*: stopped after step (\d+)', outputs[0][0])
  assert 4 <= int(stopped) < 12
  assert os.listdir(f'{workdir}/checkpoints') == [stopped]
  assert max(runs.losses(workdir)) == int(stopped)


def _start_two_processes(workdir: str, overrides) -> list[subprocess.Popen]:
  """train.py as processes 0 and 1 of a 2-process run on 127.0.0.1, 4 CPU devices each."""
  port = portpicker.pick_unused_port()
  return [
    subprocess.Popen(
      runs.command(
        'train.py',
        workdir,
        *overrides,
        f'--coordinator_address=127.0.0.1:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ),  # fmt: skip
      env=runs.env(devices=4),
      cwd=runs.ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
