"""Bad input gets one clear error naming the bad value."""

import types

import jax
import pytest

from configs import quickstart
from data import loader
from tests.training import runs
from training import experiment, optimizers, partitioning
from training import harness as harness_lib


def _mesh_cfg(data=-1, fsdp=1, tensor=1):
  return types.SimpleNamespace(data=data, fsdp=fsdp, tensor=tensor)


def test_unknown_config_key_is_named():
  result = runs.run('train.py', '/tmp/unused', '--config.no_such_key=1', check=False)
  assert result.returncode != 0
  assert 'no_such_key' in result.stderr


@pytest.mark.parametrize(
  'mesh, match',
  [
    (_mesh_cfg(3, -1), r'mesh.data=3.*does not divide the 8 devices'),
    (_mesh_cfg(3), r'has 3 devices but there are 8'),
    (_mesh_cfg(2, 2, 1), r'has 4 devices but there are 8'),
    (_mesh_cfg(-1, -1), r'At most one mesh axis may be -1'),
    (_mesh_cfg(0), r'positive or -1'),
  ],
)
def test_mesh_that_does_not_fit_the_devices(mesh, match):
  with pytest.raises(ValueError, match=match):
    partitioning.make_mesh(mesh)


def test_mesh_minus_one_takes_the_rest():
  # (data, fsdp, sequence, tensor); a mesh config without `sequence` has one of 1.
  assert partitioning.mesh_shape(_mesh_cfg(2, -1, 2), 8) == (2, 2, 1, 2)


def test_batch_the_mesh_cannot_split():
  mesh = partitioning.make_mesh(_mesh_cfg(4, 2, 1))
  with pytest.raises(ValueError, match=r'batch_size=12 cannot be split over the 8 data-parallel'):
    partitioning.check_batch(12, mesh)
  partitioning.check_batch(16, mesh)
  with pytest.raises(ValueError, match=r'batch_size=6 cannot be split over data.num_shards=4'):
    loader.ShardSpec.create(6, 4, 0, 1)


def test_missing_data_path(tmp_path):
  config = quickstart.get_config()
  config.data.source = 'text'
  config.data.text_files = str(tmp_path / 'missing' / '*.txt')
  with pytest.raises(FileNotFoundError, match='missing'):
    experiment.build(config, str(tmp_path))


def test_empty_corpus(tmp_path):
  (tmp_path / 'empty.txt').write_text('\n\n   \n\n')
  config = quickstart.get_config()
  config.data.source = 'text'
  config.data.text_files = str(tmp_path / 'empty.txt')
  with pytest.raises(ValueError, match='empty'):
    experiment.build(config, str(tmp_path))


def test_bad_model_objective_and_optimizer_values(spm_path):
  config = quickstart.get_config()
  config.data.tokenizer_path = spm_path
  config.model.preset = 'bert-huge'
  with pytest.raises(ValueError, match=r"Unknown model preset 'bert-huge'.*bert-tiny"):
    experiment.build(config, '/unused')
  config.model.preset = 'bert-tiny'
  config.seq_len = 4096
  with pytest.raises(ValueError, match=r'seq_len=4096 exceeds the 512 positions'):
    experiment.build(config, '/unused')
  config.seq_len = 128
  config.objective.module = 'objectives.nope'
  with pytest.raises(ValueError, match=r"objective.module='objectives.nope'"):
    experiment.build(config, '/unused')
  config.optimizer.schedule = 'exponential'
  with pytest.raises(ValueError, match=r"optimizer.schedule 'exponential'"):
    optimizers.build(config.optimizer, 100)
  config.mesh.strategy = 'zero3'
  with pytest.raises(ValueError, match=r"mesh.strategy 'zero3'"):
    partitioning.logical_rules(config.mesh.strategy)


def test_checkpoint_with_another_tokenizer_is_refused(spm_path):
  exp = types.SimpleNamespace(
    tokenizer=types.SimpleNamespace(path='/b/spm.model', fingerprint=lambda: 'b' * 64)
  )
  meta = {'tokenizer': {'path': '/a/spm.model', 'sha256': 'a' * 64}}
  with pytest.raises(ValueError, match=r'trained with tokenizer /a/spm.model.*data.tokenizer_path'):
    harness_lib.check_tokenizer(meta, exp, '/run/checkpoints')
  assert jax.device_count() == 8


@pytest.mark.slow
def test_a_bad_config_value_stops_before_the_workdir_is_made(tmp_path):
  workdir = tmp_path / 'run'
  overrides = ('--config.batch_size=0', '--config.optimizer.b2=1.0')
  result = runs.run('train.py', str(workdir), *overrides, check=False)
  assert result.returncode != 0
  assert 'batch_size=0: must be an integer >= 1' in result.stderr
  assert 'optimizer.b2=1.0' in result.stderr
  assert not workdir.exists()
