"""The prefetching thread: the same batches in order, the data state of the batch
consumed (not of those read ahead), errors raised where the batch was asked for."""

import threading

import pytest

from training import prefetch


class CountingLoader:
  """Batches 0, 1, 2, ...; its state is how many were read; fails at `fail_at`."""

  def __init__(self, stop_at=None, fail_at=None):
    self.read, self.stop_at, self.fail_at = 0, stop_at, fail_at

  def __next__(self):
    if self.read == self.fail_at:
      raise ValueError(f'bad record in batch {self.read}')
    if self.read == self.stop_at:
      raise StopIteration
    self.read += 1
    return {'x': self.read - 1}

  def get_state(self):
    return {'read': self.read}


def _wait_until(condition):
  event = threading.Event()
  for _ in range(200):
    if condition():
      return
    event.wait(0.01)
  raise AssertionError('the prefetch thread did not read ahead')


@pytest.mark.parametrize('depth', [0, 1, 3])
def test_batches_in_order_with_the_state_of_the_consumed_one(depth):
  loader = CountingLoader()
  batches = prefetch.Prefetcher(loader, lambda b: b['x'] * 10, depth)
  for i in range(5):
    item = next(batches)
    assert item.batch == 10 * i and item.data_state == {'read': i + 1}
    assert item.host_seconds >= 0
  if depth:
    _wait_until(lambda: loader.read >= 5 + depth)  # Read ahead: the loader is further on...
  assert next(batches).data_state == {'read': 6}  # ... but the state is the consumed one's.
  batches.close()


def test_an_error_reaches_the_consumer_at_its_batch():
  batches = prefetch.Prefetcher(CountingLoader(fail_at=3), lambda b: b, depth=2)
  assert [next(batches).batch['x'] for _ in range(3)] == [0, 1, 2]
  with pytest.raises(ValueError, match='bad record in batch 3'):
    next(batches)


def test_the_end_of_the_data_stops_iteration():
  batches = prefetch.Prefetcher(CountingLoader(stop_at=2), lambda b: b, depth=4)
  assert [item.batch['x'] for item in batches] == [0, 1]


def test_close_stops_the_thread_and_depth_is_checked():
  batches = prefetch.Prefetcher(CountingLoader(), lambda b: b, depth=2)
  next(batches)
  batches.close()
  assert not batches._thread.is_alive()
  with pytest.raises(ValueError, match='data.prefetch=-1'):
    prefetch.Prefetcher(CountingLoader(), lambda b: b, depth=-1)
