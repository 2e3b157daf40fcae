"""Translation-pair rows (XLM TLM, contrastive): framing, languages, positions, resumption."""

import grain
import numpy as np
import pytest

from data import parallel_pairs

CLS, SEP = 2, 3


class _Tokenizer:
  """Each character one id: source letters a-z -> 10.., target letters upper-cased."""

  cls_id, sep_id = CLS, SEP

  def encode(self, text):
    return np.array([ord(c) for c in text if c != ' '], np.int32)


def _docs():
  return [
    'abc\tABC\nde\tDE\nfghij\tFGHIJ',
    'klmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\tKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ',
    'xy\tXY',
  ]


def _rows(joint, n=None, seq_len=32, max_pairs=8, state=None, docs=None):
  docs = docs or _docs()
  stream = grain.MapDataset.source(docs).map_with_index(
    lambda i, t: {'text': t, 'epoch': 0, 'doc': i}
  )
  pairs = parallel_pairs.parallel_pair_rows(
    stream.to_iter_dataset(),
    _Tokenizer(),
    joint=joint,
    seq_len=seq_len,
    max_pairs=max_pairs,
    shard_index=0,
    num_shards=1,
  )
  it = iter(pairs)
  if state is not None:
    it.set_state(state)
  return it, (list(it) if n is None else [next(it) for _ in range(n)])


def test_joint_rows_frame_each_pair_as_one_segment_with_reset_positions():
  _, rows = _rows(joint=True)
  row = rows[0]
  # [CLS] abc [SEP] ABC [SEP] | [CLS] de [SEP] DE [SEP] | [CLS] fghij [SEP] FGHIJ [SEP]
  first = [CLS, *map(ord, 'abc'), SEP, *map(ord, 'ABC'), SEP]
  np.testing.assert_array_equal(row['tokens'][:9], first)
  np.testing.assert_array_equal(row['segment_ids'][:9], [1] * 9)
  np.testing.assert_array_equal(row['token_types'][:9], [0] * 5 + [1] * 4)
  np.testing.assert_array_equal(row['positions'][:9], [0, 1, 2, 3, 4, 0, 1, 2, 3])
  assert row['segment_ids'][9] == 2 and row['segment_ids'][16] == 3
  # The long pair (36 + 36 tokens) is cut to its row, both sides kept, its languages in order.
  long_row = rows[1]
  n = int(np.sum(long_row['segment_ids'] > 0))
  assert n == 32 and set(long_row['segment_ids'][:n]) == {1}
  types = long_row['token_types'][:n]
  assert types[0] == 0 and types[-1] == 1 and np.all(np.diff(types) >= 0)
  # Every line is read exactly once, in order.
  letters = ''.join(chr(t) for r in rows for t in r['tokens'] if t > SEP)
  assert letters.startswith('abcABCdeDEfghijFGHIJklmno') and letters.endswith('xyXY')


def test_separate_rows_put_each_side_in_its_own_segment():
  _, rows = _rows(joint=False)
  row = rows[0]
  np.testing.assert_array_equal(row['tokens'][:10], [CLS, 97, 98, 99, SEP, CLS, 65, 66, 67, SEP])
  np.testing.assert_array_equal(row['segment_ids'][:10], [1] * 5 + [2] * 5)
  np.testing.assert_array_equal(row['token_types'][:10], [0] * 5 + [1] * 5)
  np.testing.assert_array_equal(row['positions'][:10], [0, 1, 2, 3, 4] * 2)
  # Segments come in (source, target) pairs: 2k-1 is language 0, 2k language 1.
  for r in rows:
    for s in set(r['segment_ids'][r['segment_ids'] > 0].tolist()):
      assert set(r['token_types'][r['segment_ids'] == s].tolist()) == {(s - 1) % 2}


def test_max_pairs_and_resumption():
  docs = ['\n'.join(f'{"ab" * (i % 3 + 1)}\t{"AB" * (i % 3 + 1)}' for i in range(40))]
  _, rows = _rows(joint=True, docs=docs, seq_len=64, max_pairs=3)
  assert all(r['segment_ids'].max() <= 3 for r in rows) and len(rows) == 14
  it, first = _rows(joint=True, n=5, docs=docs, seq_len=64, max_pairs=3)
  state = it.get_state()
  rest = list(it)
  _, restored = _rows(joint=True, docs=docs, seq_len=64, max_pairs=3, state=state)
  assert len(rest) == len(restored) == 9
  for a, b in zip(rest, restored, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_a_line_without_a_tab_is_an_error_naming_it():
  with pytest.raises(ValueError, match='document 0, line 2'):
    _rows(joint=True, docs=['ab\tAB\nno tab here'])
