"""Checkpoints are verified when read back: a damaged step is moved aside and the run
resumes from the one before; a config that cannot use a checkpoint stops before any
array is read; a NaN state is never saved; a failed save is one clear error and leaves
no partial directory (training/checkpointing.py, training/integrity.py,
training/resume.py)."""

import errno
import glob
import json
import os
import re
import shutil
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import quickstart
from tests.training import runs
from training import checkpointing, integrity, model_setup, pretrained, resume, trainer
from training import harness as harness_lib

# A failed Orbax read leaves coroutines that are collected after the event loop closed;
# the warnings they raise are Orbax's, not a failure of the behaviour tested here.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def _config(spm_path, **overrides):
  config = quickstart.get_config()
  config.data.tokenizer_path = spm_path
  config.batch_size, config.seq_len, config.total_steps = 8, 32, 2
  config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps = 1, 0, 1
  config.peak_flops_per_device = 1e9
  config.optimizer.warmup_steps, config.optimizer.warmup_ratio = 1, 0.0
  for key, value in overrides.items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory, spm_path) -> str:
  """A 2-step run with a checkpoint at each step (steps 1 and 2)."""
  workdir = str(tmp_path_factory.mktemp('integrity') / 'run')
  trainer.train(_config(spm_path), workdir)
  assert sorted(os.listdir(f'{workdir}/checkpoints')) == ['1', '2']
  return workdir


@pytest.fixture
def run(trained, tmp_path) -> str:
  """A copy of the trained run, to damage."""
  copy = str(tmp_path / 'run')
  shutil.copytree(trained, copy)
  return copy


class _RestoreSpy:
  """Records the items each Orbax restore of a checkpointer asks for."""

  def __init__(self, checkpointer):
    self.items, self._restore = [], checkpointer._manager.restore
    checkpointer._manager.restore = self

  def __call__(self, step, args):
    self.items.append((step, sorted(args.keys())))
    return self._restore(step, args=args)

  def arrays_read(self) -> bool:
    return any('state' in items for _, items in self.items)


def _resume(workdir, config):
  """(start_state's result, its log lines, the restore spy) of a run resuming in `workdir`."""
  harness = harness_lib.Harness(config, workdir)
  spy, lines = _RestoreSpy(harness.checkpointer), []
  try:
    result = resume.start_state(harness, lines.append)
  finally:
    harness.checkpointer.close()
  return result, lines, spy


def _largest_array_file(step_dir: str) -> str:
  files = [p for p in glob.glob(f'{step_dir}/state/**', recursive=True) if os.path.isfile(p)]
  return max(files, key=os.path.getsize)


def _flip(path: str, count: int, offset: int | None = None):
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  start = len(data) // 2 if offset is None else offset
  for i in range(start, start + count):
    data[i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(bytes(data))


def _edit_json_item(step_dir: str, item: str, edit):
  """Rewrites a JSON item's file on disk (what Orbax's JsonSave wrote) by `edit`."""
  path = f'{step_dir}/{item}/metadata'
  with open(path) as f:
    value = json.load(f)
  edit(value)
  with open(path, 'w') as f:
    json.dump(value, f)


def _rewrite_state_leaf(step_dir: str, name: str, change):
  """Rewrites the state item of a step with one leaf changed by `change`, keeping the
  step's integrity record: on-disk damage confined to that one array."""
  with ocp.StandardCheckpointer() as reader:
    state = reader.restore(f'{step_dir}/state')
  flat = jax.tree_util.tree_flatten_with_path(state)
  leaves = [
    change(np.array(leaf)) if integrity.leaf_name(path) == name else leaf for path, leaf in flat[0]
  ]
  shutil.rmtree(f'{step_dir}/state')
  with ocp.StandardCheckpointer() as writer:
    writer.save(f'{step_dir}/state', jax.tree_util.tree_unflatten(flat[1], leaves))
  # The rewrite marks its own commit; the step keeps the original integrity item.


def _flip_one_byte(array: np.ndarray) -> np.ndarray:
  raw = array.view(np.uint8).reshape(-1).copy()
  raw[raw.size // 2 + 1] ^= 0x10
  return raw.view(array.dtype).reshape(array.shape)


ADAM_MOMENT = 'opt_state/1/0/mu/encoder/block_0/mlp/wi/kernel'


def _damage(kind: str, checkpoints: str):
  """Damages step 2 (or adds a stray step); returns the item the log must name."""
  step = f'{checkpoints}/2'
  if kind == 'array bytes':
    _flip(_largest_array_file(step), 8)
  elif kind == 'adam moment':
    _rewrite_state_leaf(step, ADAM_MOMENT, _flip_one_byte)
    return f"'state': .* \\({ADAM_MOMENT}\\)"
  elif kind == 'zero-byte file':
    open(_largest_array_file(step), 'w').close()
  elif kind == 'no _METADATA':
    os.remove(f'{step}/state/_METADATA')
    return "'state/_METADATA': missing"
  elif kind == 'no manifest':
    os.remove(f'{step}/state/manifest.ocdbt')
  elif kind == 'orbax metadata bytes':
    _flip(f'{step}/state/_METADATA', 8)
  elif kind == 'meta value':
    _edit_json_item(step, 'meta', lambda meta: meta['config'].update(seed=7))
    return "'meta': its digest differs"
  elif kind == 'meta bytes':
    _flip(f'{step}/meta/metadata', 4, offset=40)
    return "'meta': unreadable"
  elif kind == 'data value':
    _edit_json_item(step, 'data', lambda data: data['shards']['0'].update(offset=3))
    return "'data': its digest differs"
  elif kind == 'no integrity item':
    shutil.rmtree(f'{step}/integrity')
    return "'integrity': missing integrity"
  elif kind == 'stray step':
    os.makedirs(f'{checkpoints}/999')
    return "step 999 is unusable, item 'step': an empty or stray directory"
  return "'state'"


@pytest.mark.parametrize(
  'kind',
  [
    'array bytes',
    'adam moment',
    'zero-byte file',
    'no _METADATA',
    'no manifest',
    'orbax metadata bytes',
    'meta value',
    'meta bytes',
    'data value',
    'no integrity item',
    'stray step',
  ],
)
def test_a_damaged_newest_step_is_moved_aside_and_the_run_resumes_from_the_one_before(
  run, spm_path, kind
):
  checkpoints = f'{run}/checkpoints'
  named = _damage(kind, checkpoints)
  (state, _, data_state, step), lines, _ = _resume(run, _config(spm_path))
  bad = '999' if kind == 'stray step' else '2'
  expected_step = 2 if kind == 'stray step' else 1
  assert step == int(state.step) == expected_step and data_state['shards']
  moved = [line for line in lines if 'is unusable' in line]
  assert len(moved) == 1, lines
  assert f'step {bad} is unusable' in moved[0] and f'{bad}.corrupt' in moved[0]
  assert re.search(named, moved[0]), moved[0]
  assert lines[-1] == f'Resumed from step {expected_step} in {checkpoints}.'
  assert os.path.isdir(f'{checkpoints}/{bad}.corrupt') and not os.path.exists(
    f'{checkpoints}/{bad}'
  )
  # Orbax no longer lists it: the next resume goes straight to the good step.
  (_, _, _, again), lines, _ = _resume(run, _config(spm_path))
  assert again == expected_step and not any('unusable' in line for line in lines)


def test_the_restored_state_is_the_saved_one(run, spm_path):
  (state, _, _, step), _, spy = _resume(run, _config(spm_path))
  assert step == 2 and spy.arrays_read()
  # Step 2's own record: the digests of what was restored are those saved.
  with open(f'{run}/checkpoints/2/integrity/metadata') as f:
    saved = json.load(f)['state']
  assert integrity.state_record(state)[0] == saved


def test_no_usable_step_stops_with_the_list_and_never_starts_over(run, spm_path):
  for step in ('1', '2'):
    _flip(_largest_array_file(f'{run}/checkpoints/{step}'), 8)
  with pytest.raises(RuntimeError, match=r'No usable checkpoint.*step 2 \(state: .*step 1 \(state'):
    _resume(run, _config(spm_path))
  assert sorted(os.listdir(f'{run}/checkpoints')) == ['1.corrupt', '2.corrupt']
  with pytest.raises(
    RuntimeError, match=r'holds only checkpoints moved aside.*1.corrupt, 2.corrupt'
  ):
    _resume(run, _config(spm_path))


def test_a_checkpoint_written_before_digests_still_resumes(run, spm_path):
  step = f'{run}/checkpoints/2'
  shutil.rmtree(f'{step}/integrity')
  with open(f'{step}/_CHECKPOINT_METADATA') as f:
    metadata = json.load(f)
  del metadata['item_handlers']['integrity']
  with open(f'{step}/_CHECKPOINT_METADATA', 'w') as f:
    json.dump(metadata, f)
  harness = harness_lib.Harness(_config(spm_path), run)
  warnings, lines = [], []
  harness.checkpointer.log = warnings.append
  _, _, _, resumed = resume.start_state(harness, lines.append)
  harness.checkpointer.close()
  assert resumed == 2 and 'predates integrity digests' in warnings[0]


def test_init_from_a_run_with_a_damaged_newest_checkpoint_is_an_error(run):
  _flip(_largest_array_file(f'{run}/checkpoints/2'), 8)
  with pytest.raises(
    ValueError,
    match=rf'init_from {run}: its newest checkpoint is damaged \(checkpoint {run}/checkpoints/2, item .state.',
  ):
    pretrained.load_params(model_setup.describe(run))
  assert sorted(os.listdir(f'{run}/checkpoints')) == ['1', '2']  # Another run's: untouched.


def _write_vocab(path: str):
  words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'a', 'of']
  with open(path, 'w') as f:
    f.write('\n'.join(words + [f'w{i}' for i in range(200)]) + '\n')
  return path


@pytest.mark.parametrize(
  'change, message',
  [
    ('tokenizer', r'trained with tokenizer .*spm.model.*point data.tokenizer_path'),
    ('vocab', r'data.vocab_size=4096 .*asks for data.vocab_size=2048'),
    ('layers', r'model.num_layers=None in the checkpoint, 3 now'),
    ('total_steps', r'total_steps=2 in the checkpoint, 8 now.*allow_schedule_change=True'),
    ('learning_rate', r'optimizer.learning_rate=0.001 in the checkpoint, 0.002 now'),
  ],
)
def test_a_config_that_cannot_use_the_checkpoint_stops_before_any_array_is_read(
  run, spm_path, tmp_path, change, message
):
  config = _config(spm_path)
  if change == 'tokenizer':
    config.data.tokenizer_path = _write_vocab(str(tmp_path / 'vocab.txt'))
  elif change == 'vocab':  # The run trained its tokenizer: it is reused, 2048 would be a lie.
    os.makedirs(f'{run}/tokenizer', exist_ok=True)
    shutil.copyfile(spm_path, f'{run}/tokenizer/spm.model')
    config.data.tokenizer_path, config.data.vocab_size = '', 2048
  elif change == 'layers':
    config.model.num_layers = 3
  elif change == 'total_steps':
    config.total_steps, config.optimizer.schedule = 8, 'linear'
  else:
    config.optimizer.learning_rate = 2e-3
  harness = harness_lib.Harness(config, run)
  spy = _RestoreSpy(harness.checkpointer)
  with pytest.raises(integrity.CheckpointMismatchError, match=message):
    resume.start_state(harness, print)
  harness.checkpointer.close()
  assert not spy.arrays_read(), spy.items
  assert sorted(os.listdir(f'{run}/checkpoints')) == ['1', '2']  # Nothing moved aside.


def _refresh_meta_digest(step_dir):
  """The test's edit of meta is the run's own (not damage): its digest follows."""
  with open(f'{step_dir}/meta/metadata') as f:
    meta = json.load(f)
  _edit_json_item(
    step_dir, 'integrity', lambda r: r['items'].update(meta=integrity.json_digest(meta))
  )


def test_allow_schedule_change_resumes_and_says_what_changed(run, spm_path):
  config = _config(spm_path, total_steps=8, allow_schedule_change=True)
  (_, _, _, step), lines, _ = _resume(run, config)
  assert step == 2
  assert any('allow_schedule_change' in line and 'total_steps=2 in the checkpoint, 8 now' in line
             for line in lines), lines  # fmt: skip


def test_a_longer_run_on_a_constant_schedule_just_resumes(run, spm_path):
  config = _config(spm_path, total_steps=8)
  config.optimizer.schedule = 'constant'
  _edit_json_item(
    f'{run}/checkpoints/2', 'meta', lambda m: m['config']['optimizer'].update(schedule='constant')
  )
  _refresh_meta_digest(f'{run}/checkpoints/2')
  (_, _, _, step), lines, _ = _resume(run, config)
  assert step == 2 and any('does not depend on it' in line for line in lines)


def test_low_disk_space_is_announced_at_start(run, spm_path, monkeypatch):
  usage = shutil.disk_usage(run)
  monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage._replace(free=1000))
  _, lines, _ = _resume(run, _config(spm_path))
  assert any('Only 1000 B free' in line and 'twice the newest checkpoint (step 2' in line
             for line in lines), lines  # fmt: skip


def _small_state(value=1.0):
  return {'params': {'w': jnp.full((4, 8), value), 'b': jnp.zeros((8,))}, 'step': jnp.int32(3)}


def test_a_non_finite_state_is_never_saved(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2, save_every=1)
  state = _small_state()
  state['params']['w'] = state['params']['w'].at[1, 2].set(jnp.nan)
  with pytest.raises(integrity.NonFiniteStateError, match=r'step 5: .*NaN or infinite.*params/w'):
    checkpointer.save(5, state, {'shards': {}}, {'note': 'x'})
  checkpointer.close()
  assert os.listdir(tmp_path / 'checkpoints') == []


def _fail_json_writes_of(step: int):
  """Makes Orbax's background JSON writes of `step` fail as a full disk does."""
  handler = ocp.handlers.JsonCheckpointHandler
  original = handler._save_fn

  async def failing(self, x, directory):
    if f'/{step}{checkpointing._TMP_MARKER}' in str(directory):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / 'metadata'))
    return await original(self, x, directory)

  return handler, failing


def test_a_failed_save_stops_at_once_with_one_clear_error_and_no_debris(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=1, save_every=1)
  assert checkpointer.save(1, _small_state(1.0), {'shards': {}}, {'note': 'one'})
  handler, failing = _fail_json_writes_of(2)
  monkeypatch.setattr(handler, '_save_fn', failing)
  assert checkpointer.save(2, _small_state(2.0), {'shards': {}}, {'note': 'two'})
  while checkpointer._manager.is_saving_in_progress():  # The background write fails...
    time.sleep(0.01)
  with pytest.raises(checkpointing.CheckpointSaveError) as raised:
    checkpointer.check_saves()  # ... and the loop's next step boundary says so.
  message = str(raised.value)
  assert message.startswith(f'Saving the checkpoint of step 2 to {tmp_path}/checkpoints/2 failed')
  assert (
    '[Errno 28] No space left on device' in message
    and 'newest complete checkpoint is step 1' in message
  )
  assert len(message.splitlines()) == 1 and raised.value.__cause__ is not None
  # No partial directory; keep=1 did not rotate step 1 away for the failed step 2.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1']
  monkeypatch.undo()
  checkpointer.close()


def test_on_save_error_continue_logs_and_keeps_training(tmp_path, monkeypatch):
  logged = []
  checkpointer = checkpointing.Checkpointer(
    str(tmp_path), keep=1, save_every=1, on_save_error='continue', log=logged.append
  )
  checkpointer.save(1, _small_state(1.0), {'shards': {}}, {'note': 'one'})
  handler, failing = _fail_json_writes_of(2)
  with monkeypatch.context() as patch:
    patch.setattr(handler, '_save_fn', failing)
    checkpointer.save(2, _small_state(2.0), {'shards': {}}, {'note': 'two'})
    checkpointer._settle()
  assert len(logged) == 1 and 'step 2' in logged[0] and "on_save_error='continue'" in logged[0]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1']
  checkpointer.save(3, _small_state(3.0), {'shards': {}}, {'note': 'three'})
  checkpointer.close()  # Step 3 confirmed: now step 1 goes (keep=1).
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3']
  reader = checkpointing.Checkpointer(str(tmp_path), keep=1, save_every=1)
  state, _, meta = reader.restore_as_saved(3)
  assert meta == {'note': 'three'} and float(state['params']['w'][0, 0]) == 3.0


def test_a_full_disk_fails_the_save_cleanly(tmp_path):
  """The real thing on a small tmpfs (needs mount rights: root, as in CI's containers)."""
  mount = tmp_path / 'small'
  mount.mkdir()
  made = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=400k', 'tmpfs', str(mount)], capture_output=True
  )
  if made.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({made.stderr.decode().strip()[:80]})')
  try:
    checkpointer = checkpointing.Checkpointer(str(mount), keep=3, save_every=1)
    noise = lambda seed: {'w': jax.random.normal(jax.random.key(seed), (256, 256))}  # noqa: E731
    checkpointer.save(1, noise(1), {'shards': {}}, {})
    checkpointer._settle()  # 256 KB of incompressible floats: one fits, two do not.
    with pytest.raises(
      checkpointing.CheckpointSaveError, match=r'step 2 .*No space left on device'
    ):
      checkpointer.save(2, noise(2), {'shards': {}}, {})
      checkpointer.close()
    assert sorted(os.listdir(mount / 'checkpoints')) == ['1']
  finally:
    subprocess.run(['umount', str(mount)], check=False)


@pytest.mark.slow
def test_flipped_bytes_in_the_newest_checkpoint_resume_from_the_one_before(tmp_path, spm_path):
  """train.py end to end: the damaged step 6 is moved aside, steps 5-6 are trained again
  from step 4, and end where the undamaged run ended, bit for bit."""
  overrides = (
    *runs.TINY_OVERRIDES,
    '--config.seq_len=32',
    '--config.total_steps=6',
    '--config.checkpoint_every_steps=2',
    f'--config.data.tokenizer_path={spm_path}',
  )
  workdir = str(tmp_path / 'run')
  runs.run('train.py', workdir, *overrides)
  expected = runs.losses(workdir)
  with open(f'{workdir}/checkpoints/6/integrity/metadata') as f:
    saved = json.load(f)['state']
  _flip(_largest_array_file(f'{workdir}/checkpoints/6'), 8)
  again = runs.run('train.py', workdir, *overrides)
  assert 'Checkpoint step 6 is unusable' in again.stdout and 'Resumed from step 4' in again.stdout
  got = runs.losses(workdir)
  assert [got[s] for s in (5, 6)] == [expected[s] for s in (5, 6)]
  with open(f'{workdir}/checkpoints/6/integrity/metadata') as f:
    assert json.load(f)['state'] == saved  # The same state as before the damage.
  assert os.path.isdir(f'{workdir}/checkpoints/6.corrupt')
