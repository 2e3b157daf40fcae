"""The launch scripts in scripts/: in --dry-run mode each prints the command it would run
on every host (train.py, the config, --distributed) and runs nothing: gcloud, srun and
scontrol are stubs here that would leave a mark if called."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('scripts/tpu_pod.sh', 'scripts/slurm_gpu.sbatch')
CONFIG = 'configs/paper/bert_base.py'


def _run(tmp_path, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  stubs = tmp_path / 'bin'
  stubs.mkdir(exist_ok=True)
  for tool in ('gcloud', 'srun', 'scontrol', 'sbatch'):
    (stubs / tool).write_text(f'#!/bin/sh\ntouch {tmp_path}/called-{tool}\nexit 99\n')
    (stubs / tool).chmod(0o755)
  environ = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
  environ.update(PATH=f'{stubs}:{os.environ["PATH"]}', TARBALL=str(tmp_path / 'code.tar.gz'))
  environ.update(env)
  result = subprocess.run(
    ['bash', os.path.join(ROOT, script), *args],
    env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60,
  )  # fmt: skip
  assert not list(tmp_path.glob('called-*')), 'a dry run called a tool'
  assert not (tmp_path / 'code.tar.gz').exists(), 'a dry run packed the code'
  return result


def _lines(result, start: str) -> list[str]:
  assert result.returncode == 0, result.stderr
  return [line for line in result.stdout.splitlines() if line.startswith(start)]


def test_tpu_pod_dry_run_sets_up_and_starts_train_py_on_every_worker(tmp_path):
  result = _run(
    tmp_path,
    'scripts/tpu_pod.sh',
    '--dry-run',
    CONFIG,
    '/gcs/my-bucket/run',
    '--config.batch_size=256',
    TPU_NAME='my-pod',
    ZONE='us-central2-b',
    GCS_BUCKET='my-bucket',
  )
  gcloud = _lines(result, '+ gcloud compute tpus tpu-vm ')
  assert len(gcloud) == 3  # Copy the code, install, train.
  assert all(' my-pod' in line and '--worker=all' in line for line in gcloud)
  scp, setup, launch = gcloud
  assert 'scp ' in scp and 'code.tar.gz' in scp
  assert 'pip install --quiet -r requirements.txt jax\\[tpu\\]==0.10.2' in setup
  assert 'gcsfuse' in launch and 'my-bucket /gcs/my-bucket' in launch
  assert (
    f'python train.py --config={CONFIG} --workdir=/gcs/my-bucket/run --distributed '
    '--config.batch_size=256' in launch
  )

  only_launch = _run(tmp_path, 'scripts/tpu_pod.sh', '--dry-run', '--skip-setup', CONFIG, '/w')
  (launch,) = _lines(only_launch, '+ ')
  assert 'train.py' in launch and f'--config={CONFIG}' in launch and '--distributed' in launch


def test_tpu_pod_refuses_a_gs_workdir(tmp_path):
  result = _run(tmp_path, 'scripts/tpu_pod.sh', '--dry-run', CONFIG, 'gs://my-bucket/run')
  assert result.returncode == 2
  assert 'GCS_BUCKET=my-bucket WORKDIR=/gcs/my-bucket/run' in result.stderr
  assert not result.stdout


@pytest.mark.parametrize(
  'nodelist, head', [('gpu[07-09,12],cpu1', 'gpu07'), ('a1,b2', 'a1'), ('n9', 'n9')]
)
def test_slurm_dry_run_starts_train_py_with_the_first_node_as_coordinator(tmp_path, nodelist, head):
  result = _run(
    tmp_path,
    'scripts/slurm_gpu.sbatch',
    '--dry-run',
    CONFIG,
    '/shared/run',
    '--config.model.dtype=bfloat16',
    SLURM_JOB_NODELIST=nodelist,
    SLURM_NTASKS_PER_NODE='8',
    COORDINATOR_PORT='23456',
  )
  assert _lines(result, '+ export ') == [f'+ export JAX_COORDINATOR_ADDRESS={head}:23456']
  (srun,) = _lines(result, '+ srun ')
  assert (
    f'train.py --config={CONFIG} --workdir=/shared/run --distributed '
    '--config.model.dtype=bfloat16' in srun
  )


def test_slurm_one_process_per_node_sees_every_gpu(tmp_path):
  result = _run(
    tmp_path,
    'scripts/slurm_gpu.sbatch',
    '--dry-run',
    CONFIG,
    '/shared/run',
    SLURM_NTASKS_PER_NODE='1',
    GPUS_PER_NODE='4',
  )
  assert '+ export JAX_LOCAL_DEVICE_IDS=0,1,2,3' in _lines(result, '+ export ')
  (srun,) = _lines(result, '+ srun ')
  assert 'train.py' in srun and f'--config={CONFIG}' in srun and '--distributed' in srun


@pytest.mark.parametrize('script', SCRIPTS)
def test_script_without_arguments_prints_its_usage(tmp_path, script):
  result = _run(tmp_path, script, '--dry-run')
  assert result.returncode == 2
  assert 'CONFIG and WORKDIR are required' in result.stderr and 'Usage' in result.stderr


@pytest.mark.parametrize('script', SCRIPTS)
def test_script_is_strict_and_passes_shellcheck(script):
  with open(os.path.join(ROOT, script)) as f:
    assert 'set -euo pipefail' in f.read()
  subprocess.run(['bash', '-n', os.path.join(ROOT, script)], check=True)
  if shutil.which('shellcheck'):  # Not a pinned dependency; CI checks it where installed.
    result = subprocess.run(
      ['shellcheck', os.path.join(ROOT, script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
