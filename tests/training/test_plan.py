"""Ahead-of-time plans (training/plan.py): slice names, the CPU stand-in's plan of a tiny
model on the 8 test devices (JSON figures, exit codes), and, where libtpu is installed
(requirements-plan.txt), the same plan compiled for a real TPU topology."""

import json
import os

import pytest

from configs import loading
from training import plan, topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(ROOT, 'configs', 'quickstart.py')
# bert-tiny, one layer, on a v5e-8's 8 chips: fsdp=8, batch 16 x 64 (a compile of seconds).
TINY = [
  '--config.model.num_layers=1',
  '--config.batch_size=16',
  '--config.seq_len=64',
  '--config.data.vocab_size=512',
  '--config.mesh.data=1',
  '--config.mesh.fsdp=8',
]
# Two 8192-wide layers (1.7B parameters) replicated on every chip (strategy dp): their
# float32 parameters and Adam moments alone outgrow a v5e chip's 15.75 GiB.
TOO_BIG = [
  *TINY[1:],
  '--config.model.num_layers=2',
  '--config.model.d_model=8192',
  '--config.model.mlp_dim=32768',
  '--config.model.num_heads=64',
  '--config.mesh.strategy=dp',
]
KEYS = (
  'fits',
  'bytes_per_device',
  'hbm_bytes_per_device',
  'flops_per_step',
  'mesh',
  'strategy',
  'argument_bytes',
  'output_bytes',
  'temp_bytes',
  'xla_flops_per_step',
  'compile_seconds',
)


@pytest.mark.parametrize(
  'name,chips,grid,libtpu_name',
  [
    ('v5p-1024', 512, (8, 8, 8), 'v5:8x8x8'),
    ('v5p-128', 64, (4, 4, 4), 'v5:4x4x4'),
    ('v5p-8', 4, (2, 2, 1), 'v5:2x2x1'),
    ('v4-128', 64, (4, 4, 4), 'v4:4x4x4'),
    ('v5e-256', 256, (16, 16), 'v5e:16x16'),
    ('v5e-64', 64, (8, 8), 'v5e:8x8'),
    ('v5e-16', 16, (4, 4), 'v5e:4x4'),
    ('v5e-8', 8, (2, 4), 'v5e:2x4'),
    ('v5p:4x4x12', 192, (4, 4, 12), 'v5:4x4x12'),
  ],
)
def test_slice_names_give_cloud_tpus_chip_grids(name, chips, grid, libtpu_name):
  tpu = topology.parse(name)
  assert (tpu.num_chips, tpu.grid, tpu.libtpu_topology) == (chips, grid, libtpu_name)


@pytest.mark.parametrize(
  'name,message',
  [
    ('v5p-9', 'not a whole number of chips'),
    ('v5p-384', r'give the grid instead, e\.g\. v5p:4x4x12'),
    ('v7-8', 'Unknown TPU slice'),
    ('v5e:4x4x4', 'a v5e grid has 2 positive sides'),
  ],
)
def test_bad_slice_names_say_what_is_wrong(name, message):
  with pytest.raises(ValueError, match=message):
    topology.parse(name)


def _argv(overrides, *flags):
  return ['plan', f'--config={QUICKSTART}', '--topology=v5e-8', *flags, *overrides]


def test_cpu_plan_prints_the_figures_and_exits_0_when_it_fits(capsys):
  assert plan.main(_argv(TINY, '--backend=cpu', '--json')) == 0
  result = json.loads(capsys.readouterr().out)
  assert set(KEYS) <= set(result)
  assert result['fits'] is True and result['backend'] == 'cpu'
  assert result['mesh']['fsdp'] == 8 and result['strategy'] == 'fsdp_tp'
  assert all(n == 1 for axis, n in result['mesh'].items() if axis != 'fsdp')
  assert result['num_devices'] == 8 and result['hbm_bytes_per_device'] == 15.75 * 2**30
  for key in ('argument_bytes', 'output_bytes', 'temp_bytes', 'bytes_per_device'):
    assert result[key] > 0, key
  assert result['bytes_per_device'] < result['hbm_bytes_per_device']
  # The step's arguments are the state (float32 parameters and Adam's two moments, sharded
  # 8 ways) and the batch; the model's count of FLOPs matches XLA's within 25%.
  assert result['argument_bytes'] >= 12 * result['params'] / 8
  assert 0.75 < result['xla_flops_per_step'] / result['flops_per_step'] < 1.25
  assert result['vocab_size'] == 512  # data.vocab_size: the SentencePiece model it trains.


def test_a_step_that_does_not_fit_exits_1_with_its_numbers(capsys):
  assert plan.main(_argv(TOO_BIG, '--backend=cpu')) == 1
  out = capsys.readouterr().out
  assert 'DOES NOT FIT' in out and 'of 15.75 GiB HBM' in out
  assert 'per chip: arguments 18.85 GiB' in out and 'strategy dp' in out


def test_a_mesh_that_does_not_cover_the_slice_is_an_error():
  config = loading.load(QUICKSTART, [*TINY[:-1], '--config.mesh.fsdp=4'])
  with pytest.raises(ValueError, match='mesh'):
    plan.plan(config, 'v5e-8', backend='cpu')


@pytest.mark.parametrize(
  'message,temp,total',
  [
    (
      'RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO '
      'temporaries (129.46G) exceeds available HBM (95.74G).',
      int(129.46 * 2**30),
      1000 + int(129.46 * 2**30),
    ),
    (
      'RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space '
      'hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.',
      int(20.5 * 2**30) - 1000,
      int(20.5 * 2**30),
    ),
  ],
)
def test_the_tpu_compilers_refusal_gives_the_figures(message, temp, total):
  figures = plan.memory_of_refusal(message, argument_bytes=1000)
  assert (figures['temp_bytes'], figures['bytes_per_device']) == (temp, total)
  assert figures['compiler_message'].startswith('RESOURCE_EXHAUSTED')
  assert plan.memory_of_refusal('INTERNAL: something else', argument_bytes=1000) is None


@pytest.mark.skipif(topology.libtpu_version() is None, reason='libtpu is not installed')
def test_tpu_plans_compile_for_a_topology_this_host_does_not_have(capsys):
  result = plan.plan(loading.load(QUICKSTART, TINY), 'v5e-8', backend='tpu')
  assert result['backend'] == 'tpu' and result['device_kind'] == 'TPU v5 lite'
  assert result['fits'] and result['bytes_per_device'] > 0 and result['flops_per_step'] > 0
  assert plan.main(_argv(TOO_BIG, '--backend=tpu')) == 1  # Refused by the TPU compiler.
  out = capsys.readouterr().out
  assert 'DOES NOT FIT' in out and 'the TPU compiler refused the step' in out
