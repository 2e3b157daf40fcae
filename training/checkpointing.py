"""One Orbax CheckpointManager for the train state, the data iterators and the config,
each checkpoint verified when read back.

A checkpoint step holds four items: `state` (the sharded TrainState), `data` (the loader
state of every logical data shard, gathered from all processes into one JSON file, so a
run may resume on another process count), `meta` (the config and the tokenizer's
fingerprint) and `integrity` (a digest of every state leaf and of the two JSON items:
training/integrity.py). Saves are async and atomic (Orbax writes to a temporary
directory and renames it when complete), so a run killed mid-save resumes from the
newest complete checkpoint.

What this adds to Orbax:
- A state holding NaN or infinite values is refused at save (NonFiniteStateError).
- `restore` checks the step's files, compares the leaves it holds with the restore
  target before reading any array (another model: CheckpointMismatchError, the user's
  to fix), and the restored state, data and meta with their digests (damage:
  CorruptCheckpointError, which resuming answers by `move_aside` and an older step).
- Old steps are deleted by this class, not by Orbax (max_to_keep=None): only once the
  newer save is confirmed complete, so a failed or unverifiable save never rotates the
  newest good checkpoint away.
- A failed background save is reported at the next step boundary (`check_saves`, run
  by every `save` call; with several processes at the next save, where all agree) as
  one short error naming the step, the path and the OS error, its partial directory
  removed; `on_save_error` says whether the run stops.
"""

import errno
import glob
import json
import os
import re
import shutil
import time
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from training import integrity

ITEMS = ('state', 'data', 'meta', 'integrity')
# A step found unusable is renamed `<step>.corrupt` (never deleted); Orbax lists only
# integer-named directories, so it no longer sees it.
CORRUPT_SUFFIX = '.corrupt'
ON_SAVE_ERROR = ('stop', 'continue')
# Orbax's temporary directory of a step being written: `<step>.orbax-checkpoint-tmp...`.
_TMP_MARKER = '.orbax-checkpoint-tmp'
# Replica-parallel saving (each replica of a replicated array writes a slice of it) pays
# off for large arrays on many hosts; below this slice size the per-slice dispatch (one
# small XLA program per slice shape) costs more than it saves, so one replica writes the
# array (measured: a 2-layer model on 8 CPU devices saved in 4.9 s with it, 0.1 s without).
MIN_REPLICA_PARALLEL_SLICE_BYTES = 4 << 20
# How long the partial directory of a failed save must stay gone (its other writes may
# still be finishing) before the failure is reported.
_SETTLE_SECONDS = 0.25


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (disk full, permissions, a lost bucket)."""


def _register_array_handler() -> None:
  ocp.type_handlers.register_type_handler(
    jax.Array,
    ocp.type_handlers.ArrayHandler(
      min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES
    ),
    override=True,
  )


def gather_process_states(state: dict) -> list[dict]:
  """Every process's JSON-able `state`, in process order, on every process."""
  if jax.process_count() == 1:
    return [state]
  encoded = np.frombuffer(json.dumps(state).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.int32(len(encoded)))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[: len(encoded)] = encoded
  gathered = multihost_utils.process_allgather(padded)  # [processes, max_len]
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths, strict=True)]


def _all_processes_ok(ok: bool) -> bool:
  """Whether every process succeeded: they must agree on whether a step is usable."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _os_error(error: BaseException) -> str:
  """The OS error under a failed write: an OSError in the chain, or the code TensorStore
  puts in its message ([os_error_code='28']); else the error's first line."""
  seen, visited = error, set()
  while seen is not None and id(seen) not in visited:
    if isinstance(seen, OSError) and seen.errno:
      where = f': {seen.filename}' if seen.filename else ''
      return f'[Errno {seen.errno}] {seen.strerror}{where}'
    visited.add(id(seen))
    seen = seen.__cause__ or seen.__context__
  code = re.search(r"os_error_code='?(\d+)", str(error))
  if code:
    number = int(code.group(1))
    name = errno.errorcode.get(number, 'E?')
    failed = re.search(r'Failed writing: "([^"]+)"', str(error))
    where = f' (writing {failed.group(1)})' if failed else ''
    return f'[Errno {number} {name}] {os.strerror(number)}{where}'
  return integrity.short(error)


def _directory_size(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total


def _size_text(size: float) -> str:
  if size < 1024:
    return f'{size:.0f} B'
  for unit in ('KB', 'MB'):
    size /= 1024
    if size < 1024:
      return f'{size:.1f} {unit}'
  return f'{size / 1024:.1f} GB'


class Checkpointer:
  """Saves, verifies and restores (state, data states, meta) under `<workdir>/checkpoints`.

  Args:
    workdir: the run directory.
    keep: newest checkpoints kept (0: all).
    save_every: save cadence in steps (`save(force=True)` saves whatever the step).
    on_save_error: 'stop' (a failed save raises CheckpointSaveError) or 'continue' (it
      is logged and training goes on with the older checkpoints).
    read_only: reads another run's checkpoints (init_from): no saves, nothing moved.
    log: where warnings go (absl's logging.warning unless given, e.g. the run's console).
  """

  def __init__(
    self,
    workdir: str,
    *,
    keep: int,
    save_every: int,
    on_save_error: str = 'stop',
    read_only: bool = False,
    log: Callable[[str], None] | None = None,
  ):
    if on_save_error not in ON_SAVE_ERROR:
      raise ValueError(f"on_save_error={on_save_error!r}; expected 'stop' or 'continue'.")
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._every = max(save_every, 1)
    self._keep = keep
    self._on_save_error = on_save_error
    self._read_only = read_only
    self.log = log or logging.warning
    self._pending = None  # The step whose save is in flight.
    self._checked = None  # The step check_saves found written (its rotation waits).
    self._unfinished = set()  # Steps whose save failed: their partial directories go.
    _register_array_handler()
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=None,  # Rotation is ours: after the newer save is confirmed (_retain).
        enable_async_checkpointing=not read_only,
        create=not read_only,
        read_only=read_only,
      ),
      item_names=ITEMS,
    )

  # --- Steps on disk.

  def all_steps(self) -> list[int]:
    """The steps Orbax lists (integer-named directories), newest first."""
    return sorted(self._manager.all_steps(), reverse=True)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def moved_aside(self) -> list[str]:
    """Names of the steps moved aside as unusable (`<step>.corrupt`), oldest first."""
    found = glob.glob(os.path.join(self.directory, f'*{CORRUPT_SUFFIX}*'))
    return sorted((os.path.basename(p) for p in found), key=lambda n: (len(n), n))

  def move_aside(self, step: int) -> str:
    """Renames step `step` to `<step>.corrupt` (`.corrupt-1`, ... if taken) so that no
    resume reads it again and no rotation deletes it; returns the new path."""
    if self._read_only:
      raise ValueError(f'{self.directory} is read only: step {step} is not moved aside.')
    source = os.path.join(self.directory, str(step))
    target, number = source + CORRUPT_SUFFIX, 1
    while os.path.exists(target):
      target, number = f'{source}{CORRUPT_SUFFIX}-{number}', number + 1
    if jax.process_index() == 0 and os.path.exists(source):
      os.rename(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'checkpoint step {step} moved aside')
    self._manager.reload()
    return target

  def disk_space_warning(self) -> str | None:
    """A warning when the free space under the checkpoint directory is less than twice
    the newest checkpoint (the next save may then fail), else None."""
    step = self.latest_step()
    path = os.path.join(self.directory, str(step))
    if step is None or not os.path.isdir(path):
      return None
    size, free = _directory_size(path), shutil.disk_usage(self.directory).free
    if free >= 2 * size:
      return None
    return (
      f'Only {_size_text(free)} free under {self.directory}, less than twice the newest '
      f'checkpoint (step {step}: {_size_text(size)}): the next saves may fail for lack of '
      'space (on_save_error decides whether the run then stops).'
    )

  # --- Saving.

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False) -> bool:
    """Starts an async save at `step` if it is due (or `force`); returns whether it did.

    Called after every step, it also reports a failed earlier save (`check_saves`).

    Raises:
      NonFiniteStateError: the state holds NaN or infinite values (nothing is saved).
      CheckpointSaveError: a save failed and on_save_error is 'stop'.
    """
    self.check_saves()
    if not force and step % self._every:
      return False
    self._settle()
    record, nonfinite = integrity.state_record(state)
    if nonfinite:
      raise integrity.NonFiniteStateError(
        f'Not saving the checkpoint of step {step}: the state holds NaN or infinite values '
        f'in {integrity.first(nonfinite)}; the checkpoints already in {self.directory} are '
        'kept.'
      )
    shards = {}
    for process_state in gather_process_states(data_state):
      shards.update(process_state['shards'])
    data = {'shards': shards}
    check = {
      'format': integrity.FORMAT,
      'step': step,
      'state': record,
      'items': {'data': integrity.json_digest(data), 'meta': integrity.json_digest(meta)},
    }
    self._unfinished.discard(step)
    try:
      started = self._manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data),
          meta=ocp.args.JsonSave(meta),
          integrity=ocp.args.JsonSave(check),
        ),
        force=True,  # The cadence is decided above, not by Orbax's own policy.
      )
    except Exception as error:  # The synchronous part: directories, the device-to-host copy.
      # (A step directory that exists already is not this save's: Orbax refuses to start.)
      self._failed(step, error, started=False)
      return False
    if started:
      self._pending = step
    return started

  def check_saves(self) -> None:
    """Reports a background save that has failed, without waiting for one in flight:
    called at every step boundary (every `save` call does), so a failure stops the run
    at the step after it, not at the next checkpoint.

    With several processes the check waits for the next save (or `close`), where every
    process has finished its part and all agree on the outcome: a process that acted
    alone would leave the others waiting in the next collective.

    Raises:
      CheckpointSaveError: on_save_error is 'stop' and the save failed.
    """
    step = self._pending
    if step is None or step == self._checked or jax.process_count() > 1:
      return
    if self._manager.is_saving_in_progress():
      return
    self._checked = step
    try:
      self._manager.wait_until_finished()  # Returns at once: the save has ended.
      self._manager.check_for_errors()
    except Exception as error:
      self._pending = None
      self._failed(step, error, started=True)

  def close(self):
    """Waits for the save in flight (reporting its failure), then closes the manager."""
    try:
      self._settle()
    finally:
      self._manager.close()

  def _settle(self) -> None:
    """Waits for the save in flight; a failure (on any process) is reported, a success
    rotates old steps. Every process runs it at the same point (save, close)."""
    if self._unfinished:
      self._remove_unfinished()
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    failure = None
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as error:
      failure = error
    if not _all_processes_ok(failure is None):
      self._failed(step, failure or CheckpointSaveError('it failed on another process'), True)
      return
    self._retain(step)

  def _retain(self, confirmed: int) -> None:
    """Deletes the steps older than the newest `keep`, now that step `confirmed` is
    complete on disk (steps moved aside are not Orbax's and are never deleted)."""
    if self._keep <= 0 or not os.path.isdir(os.path.join(self.directory, str(confirmed))):
      return
    steps = sorted(s for s in self._manager.all_steps() if s <= confirmed)
    for old in steps[: -self._keep]:
      self._manager.delete(old)

  def _failed(self, step: int, error: Exception, started: bool) -> None:
    """A save of `step` failed: its partial directory goes, then stop or log by
    on_save_error. The raised error is one line; Orbax's own trace is in the log file."""
    path = os.path.join(self.directory, str(step))
    removed = self._remove_partial(step, started)
    message = f'Saving the checkpoint of step {step} to {path} failed: {_os_error(error)}.'
    if removed:
      message += f' Removed the partial {", ".join(removed)}.'
    latest = self.latest_step()
    newest = f'step {latest}' if latest is not None else 'none'
    if self._on_save_error == 'stop':
      raise CheckpointSaveError(
        f"{message} Stopping (on_save_error='stop'); the newest complete checkpoint is "
        f'{newest}. Free space or fix the path and rerun to resume, or set '
        "on_save_error='continue' to train on without this checkpoint."
      ) from error.with_traceback(None)
    self.log(
      f"{message} Training goes on (on_save_error='continue'); the newest complete "
      f'checkpoint is {newest}.'
    )

  def _remove_partial(self, step: int, started: bool) -> list[str]:
    """Removes Orbax's temporary directory of a failed save of `step` (and moves aside a
    step directory that a failure after the rename left behind, when the save had
    started: that directory is then this save's); returns the names removed.

    Orbax reports the first failed write while the other writes of the save may still
    be running (and recreate their directories), so the removal is repeated until the
    directory stays gone, and once more at the next save and at close.
    """
    self._unfinished.add(step)
    removed = self._remove_unfinished(settle_seconds=_SETTLE_SECONDS)
    if started and os.path.isdir(os.path.join(self.directory, str(step))):
      removed.append(os.path.basename(self.move_aside(step)) + ' (moved aside)')
    else:
      self._manager.reload()
    return removed

  def _remove_unfinished(self, settle_seconds: float = 0.0) -> list[str]:
    """Removes the temporary directories of the failed saves; with `settle_seconds`,
    until none has reappeared for that long (at most 20 x as long)."""
    removed = []
    if jax.process_index() != 0:
      return removed
    quiet_since, deadline = None, time.monotonic() + 20 * settle_seconds
    while True:
      partials = [
        p
        for step in self._unfinished
        for p in glob.glob(os.path.join(self.directory, f'{step}{_TMP_MARKER}*'))
      ]
      for partial in partials:
        shutil.rmtree(partial, ignore_errors=True)
        if os.path.basename(partial) not in removed:
          removed.append(os.path.basename(partial))
      now = time.monotonic()
      if partials or quiet_since is None:
        quiet_since = now
      if now - quiet_since >= settle_seconds or now >= deadline:
        return removed
      time.sleep(settle_seconds / 5)

  # --- Reading.

  def read_meta(self, step: int) -> dict:
    """The meta item of step `step` (config, tokenizer), verified: JSON only, no array
    is read, so a run checks its config against it before restoring anything.

    Raises:
      CorruptCheckpointError: the step is incomplete or its meta does not verify.
    """
    return self._read_json(step)[0]

  def restore(self, step: int, abstract_state):
    """Returns (state, the data state of all shards, meta) of checkpoint `step`, verified.

    Raises:
      CorruptCheckpointError: missing or unreadable files, digests that differ, a
        non-finite state.
      CheckpointMismatchError: the checkpoint's leaves are not those of `abstract_state`.
    """
    return self._restore(step, abstract_state)

  def restore_as_saved(self, step: int):
    """(state as host arrays in its saved tree, data state, meta) of checkpoint `step`,
    verified, with no target sharding: for tools that rewrite a checkpoint
    (tools/relayout.py) and for the params of another run (training/pretrained.py)."""
    return self._restore(step, None)

  def _restore(self, step: int, abstract_state):
    meta, record = self._read_json(step)
    if record is not None and abstract_state is not None:
      differences = integrity.structure_differences(record['state'], abstract_state)
      if differences:
        raise integrity.CheckpointMismatchError(
          f'The checkpoint {self.directory}/{step} holds another train state than this '
          f'run builds ({len(differences)} leaves differ: {integrity.first(differences)}): '
          'resume with the model and optimizer it was trained with, or use a new --workdir.'
        )
    data = self._restore_item(step, 'data', ocp.args.JsonRestore())
    if record is not None and integrity.json_digest(data) != record['items']['data']:
      raise self._corrupt(step, 'data', 'its digest differs from the saved one')
    target = ocp.args.StandardRestore(abstract_state)
    state = self._restore_item(step, 'state', target)
    restored, nonfinite = integrity.state_record(state)
    if record is None:
      self.log(
        f'Checkpoint step {step} in {self.directory} predates integrity digests: its '
        'state is checked for NaN and infinities only.'
      )
    else:
      differing = integrity.digest_differences(record['state'], restored)
      if differing:
        raise self._corrupt(
          step,
          'state',
          f'the digests of {len(differing)} restored arrays differ from those saved '
          f'({integrity.first(differing)}): its files are not what was written',
        )
    if nonfinite:
      raise self._corrupt(step, 'state', f'NaN or infinite values in {integrity.first(nonfinite)}')
    return state, data, meta

  def _read_json(self, step: int) -> tuple[dict, dict | None]:
    """(meta, integrity record) of step `step`; the record is None for a checkpoint
    written before digests existed."""
    has_record = integrity.check_step_files(self.directory, step, ITEMS)
    meta = self._restore_item(step, 'meta', ocp.args.JsonRestore())
    if not has_record:
      return meta, None
    record = self._restore_item(step, 'integrity', ocp.args.JsonRestore())
    if not isinstance(record, dict) or record.get('format') != integrity.FORMAT:
      raise self._corrupt(step, 'integrity', 'not an integrity record')
    if integrity.json_digest(meta) != record['items']['meta']:
      raise self._corrupt(step, 'meta', 'its digest differs from the saved one')
    return meta, record

  def _corrupt(self, step: int, item: str, reason: str) -> integrity.CorruptCheckpointError:
    return integrity.CorruptCheckpointError(step, item, reason, where=self.directory)

  def _restore_item(self, step: int, item: str, args):
    """One item of step `step`; any error reading it (on any process) is damage."""
    value, failure = None, None
    try:
      value = getattr(self._manager.restore(step, args=ocp.args.Composite(**{item: args})), item)
    except MemoryError:
      raise
    except Exception as error:
      failure = error
    if not _all_processes_ok(failure is None):
      reason = (
        f'unreadable ({integrity.short(failure)})' if failure else 'unreadable on another process'
      )
      raise self._corrupt(step, item, reason) from failure
    return value
