"""Input that keeps up: the next batches read and preprocessed (masking, packing: NumPy) by
a background thread while the current step runs; the consumer's thread puts each on the
devices when it takes it (an asynchronous transfer: JAX dispatch returns at once). The
thread makes no JAX call: with device transfers made from it, beside the train loop's
own dispatches, a test process aborted once inside XLA on jax 0.10.2's CPU client.

A checkpoint must hold the data state of the batches *consumed*, not of those read
ahead: a resumed run would otherwise skip the prefetched ones. So the thread records
the loader's state right after reading each batch and hands it over with the batch;
the train loop saves the state that came with the last batch it trained on.

The host side is timed (reading, masking, packing, dispatching the transfer), so
the log can compare the input pipeline's tokens/s with the step's: `input_wait_sec`
per step near 0 means the input keeps up.
"""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple


class Prefetched(NamedTuple):
  batch: Any  # What `to_device` made of the host batch (global jax.Arrays).
  data_state: dict  # The loader's state after this batch: resume from here.
  host_seconds: float  # Reading + preprocessing + dispatching the transfer of this batch.


class _End(NamedTuple):
  error: BaseException | None  # None: the loader is exhausted.


class Prefetcher:
  """Iterates `Prefetched` items `depth` batches ahead of the consumer.

  Args:
    loader: has `__next__` (a host batch) and `get_state()` (data/loader.py Loader).
    to_device: host batch -> device batch (partitioning.global_batch), run on the
      consumer's thread when it takes the batch.
    depth: batches read ahead (0: no thread, each batch read when asked for).
  """

  def __init__(self, loader, to_device: Callable[[dict], Any], depth: int):
    if depth < 0:
      raise ValueError(f'data.prefetch={depth} must be >= 0 (0: read each batch when asked).')
    self._loader, self._to_device, self._depth = loader, to_device, depth
    self._stop = threading.Event()
    self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    self._thread = None
    self.wait_seconds = 0.0  # Time the consumer spent waiting for batches, in total.
    if depth:
      self._thread = threading.Thread(target=self._fill, name='prefetch', daemon=True)
      self._thread.start()

  def _read(self) -> Prefetched:
    """The next host batch (numpy) and the state after it; no JAX call here."""
    start = time.perf_counter()
    host = next(self._loader)
    state = self._loader.get_state()  # Right after this batch: what resume needs.
    return Prefetched(host, state, time.perf_counter() - start)

  def _put(self, item) -> bool:
    """Puts `item` unless stopped; False when the consumer has gone."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _fill(self):
    try:
      while not self._stop.is_set():
        if not self._put(self._read()):
          return
    except StopIteration:
      self._put(_End(None))
    except BaseException as e:  # Handed to the consumer, who raises it.
      self._put(_End(e))

  def __iter__(self) -> Iterator[Prefetched]:
    return self

  def __next__(self) -> Prefetched:
    start = time.perf_counter()
    if self._thread is None:
      item = self._read()
    else:
      item = self._queue.get()
    self.wait_seconds += time.perf_counter() - start
    if isinstance(item, _End):
      self._stop.set()
      if item.error is not None:
        raise item.error
      raise StopIteration
    start = time.perf_counter()
    batch = self._to_device(item.batch)  # On the consumer's thread (see the docstring).
    return item._replace(batch=batch, host_seconds=item.host_seconds + time.perf_counter() - start)

  def close(self):
    """Stops the thread (a batch it is reading is finished and dropped)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=60)
