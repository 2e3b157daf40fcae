"""Tests of data/packing.py."""

import copy
import itertools

import grain
import numpy as np
import pytest

from data.packing import PackedRows

PREFIX, SUFFIX = 1, 2


def _documents(docs, epochs=None):
  """A Grain IterDataset of {'tokens': int32 [n], 'epoch': int} documents."""
  epochs = [0] * len(docs) if epochs is None else epochs
  return (
    grain.MapDataset.source(list(zip(docs, epochs, strict=True)))
    .map(lambda d: {'tokens': np.asarray(d[0], np.int32), 'epoch': d[1]})
    .to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4))
  )


def _packed(docs, epochs=None, seq_len=16, shard_index=0, num_shards=1):
  return PackedRows(
    _documents(docs, epochs),
    seq_len=seq_len,
    prefix_id=PREFIX,
    suffix_id=SUFFIX,
    shard_index=shard_index,
    num_shards=num_shards,
  )


def test_exact_rows():
  a = [10, 11, 12]
  b = list(range(20, 34))  # 14 tokens: split over rows 0 and 1.
  c = [40, 41]
  d = [50, 51, 52]
  rows = list(_packed([a, b, c, [], d], epochs=[0, 0, 1, 1, 1], shard_index=1, num_shards=3))
  assert len(rows) == 3
  # Row 0: A, then the first 9 tokens of B fill the row.
  # Row 1: the rest of B as a new segment, then C; 5 left (< 8): padding.
  # Row 2: D (the empty document is skipped), then the data ends: padding.
  expected_tokens = [
    [1, 10, 11, 12, 2, 1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 2],
    [1, 29, 30, 31, 32, 33, 2, 1, 40, 41, 2, 0, 0, 0, 0, 0],
    [1, 50, 51, 52, 2] + [0] * 11,
  ]
  expected_segments = [
    [1] * 5 + [2] * 11,
    [1] * 7 + [2] * 4 + [0] * 5,
    [1] * 5 + [0] * 11,
  ]
  expected_positions = [
    list(range(5)) + list(range(11)),
    list(range(7)) + list(range(4)) + [0] * 5,
    list(range(5)) + [0] * 11,
  ]
  for i, row in enumerate(rows):
    assert set(row) == {'tokens', 'segment_ids', 'positions', 'epoch', 'example_id'}
    np.testing.assert_array_equal(row['tokens'], expected_tokens[i], err_msg=f'row {i}')
    np.testing.assert_array_equal(row['segment_ids'], expected_segments[i], err_msg=f'row {i}')
    np.testing.assert_array_equal(row['positions'], expected_positions[i], err_msg=f'row {i}')
    assert all(row[k].dtype == np.int32 for k in ('tokens', 'segment_ids', 'positions'))
  # The epoch of the document that starts the row; example id = row * num_shards + shard.
  assert [int(row['epoch']) for row in rows] == [0, 0, 1]
  assert [int(row['example_id']) for row in rows] == [1, 4, 7]


def test_seq_len_too_short():
  with pytest.raises(ValueError, match='seq_len=7'):
    _packed([[5, 6]], seq_len=7)


def _stream(num_docs=300, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, 60, size=num_docs)
  lengths[::37] = 0  # Some empty documents.
  return [rng.integers(10, 1000, size=n).tolist() for n in lengths]


def _segments(row):
  """[(start, end)] of the row's segments, checking their framing and positions."""
  segment_ids = row['segment_ids']
  out = []
  for s in range(1, segment_ids.max() + 1):
    (where,) = np.nonzero(segment_ids == s)
    start, end = where[0], where[-1] + 1
    assert len(where) == end - start >= 3  # Contiguous, never an empty piece.
    assert row['tokens'][start] == PREFIX and row['tokens'][end - 1] == SUFFIX
    np.testing.assert_array_equal(row['positions'][start:end], np.arange(end - start))
    out.append((start, end))
  return out


def test_no_token_lost_or_duplicated():
  docs = _stream()
  rows = list(_packed(docs, seq_len=32))
  content = []
  for i, row in enumerate(rows):
    segments = _segments(row)
    fill = segments[-1][1]
    assert (row['segment_ids'][fill:] == 0).all() and (row['tokens'][fill:] == 0).all()
    if i < len(rows) - 1:
      assert 32 - fill < 8  # Padding only when less than 8 positions are left.
    for start, end in segments:
      content.extend(row['tokens'][start + 1 : end - 1].tolist())
  assert content == [t for doc in docs for t in doc]
  assert [int(row['example_id']) for row in rows] == list(range(len(rows)))


def test_state_restore_mid_document():
  docs = _stream(num_docs=120, seed=1)
  full = list(_packed(docs, seq_len=32))
  it = iter(_packed(docs, seq_len=32))
  mid_document = 0  # Restores from a state inside a split document.
  for k in range(len(full)):
    state = it.get_state()
    if state['has_doc'] and state['offset'] > 0:
      mid_document += 1
      fresh = iter(_packed(docs, seq_len=32))
      fresh.set_state(copy.deepcopy(state))
      expected_rest = full[k:] if mid_document % 4 == 1 else full[k : k + 2]
      rest = list(itertools.islice(fresh, len(expected_rest)))
      for expected, got in zip(expected_rest, rest, strict=True):
        for key in expected:
          np.testing.assert_array_equal(got[key], expected[key], err_msg=f'{key} after {k}')
      if mid_document % 4 == 1:
        with pytest.raises(StopIteration):
          next(fresh)
    row = next(it)
    for key in row:
      np.testing.assert_array_equal(row[key], full[k][key])
  assert mid_document > 10
  with pytest.raises(StopIteration):
    next(it)
