"""Tests of data/loader.py with the MLM preprocess and a SentencePiece tokenizer."""

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest

from configs import base
from data import sources, tokenizers
from data.loader import Loader, ShardSpec
from objectives import mlm

BATCH, SHARDS, SEQ_LEN = 8, 2, 64


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  docs = sources.load_documents(base.get_config().data, 'train')
  prefix = str(tmp_path_factory.mktemp('spm') / 'spm')
  return tokenizers.load_tokenizer(tokenizers.train_sentencepiece(docs, prefix, 1000, 200))


def _loader(tokenizer, *, split='train', seed=0, process=(0, 1), preprocess=None, **kwargs):
  config = base.get_config()
  return Loader(
    sources.load_documents(config.data, split),
    tokenizer,
    shards=ShardSpec.create(BATCH, SHARDS, *process),
    seq_len=SEQ_LEN,
    framing=mlm.FRAMING,
    preprocess=preprocess or mlm.make_preprocess(config.objective, tokenizer, seed=seed),
    seed=seed,
    train=split == 'train',
    **kwargs,
  )


def _take(loader, n):
  return list(itertools.islice(loader, n))


def _assert_batches_equal(got, expected):
  assert len(got) == len(expected)
  for step, (a, b) in enumerate(zip(got, expected, strict=True)):
    full = {'inputs', 'targets', 'weights', 'segment_ids', 'positions'}
    gathered = {'masked_positions', 'masked_targets', 'masked_weights', 'dropped_predictions'}
    assert set(a) == set(b) == full | gathered  # MLM's rows, its masked positions gathered.
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} at step {step}')


def test_deterministic(tokenizer):
  first = _take(_loader(tokenizer), 3)
  assert first[0]['inputs'].shape == (BATCH, SEQ_LEN)
  assert first[0]['weights'].sum() > 0  # Real MLM batches.
  _assert_batches_equal(_take(_loader(tokenizer), 3), first)
  other = _take(_loader(tokenizer, seed=1), 3)
  assert not np.array_equal(other[0]['targets'], first[0]['targets'])


def test_resume_from_json_state(tokenizer):
  loader = _loader(tokenizer)
  _take(loader, 5)
  state = json.loads(json.dumps(loader.get_state()))
  later = _take(loader, 5)
  restored = _loader(tokenizer)
  restored.set_state(state)
  _assert_batches_equal(_take(restored, 5), later)
  # The state is not a no-op: a fresh loader starts elsewhere.
  assert not np.array_equal(_take(_loader(tokenizer), 1)[0]['targets'], later[0]['targets'])


def test_process_count_invariance(tokenizer):
  together = _take(_loader(tokenizer), 3)
  part0 = _take(_loader(tokenizer, process=(0, 2)), 3)
  part1 = _take(_loader(tokenizer, process=(1, 2)), 3)
  assert all(p['inputs'].shape == (BATCH // 2, SEQ_LEN) for p in part0 + part1)
  joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(part0, part1, strict=True)]
  _assert_batches_equal(joined, together)
  assert not np.array_equal(part0[0]['targets'], part1[0]['targets'])


def test_set_state_of_other_shards(tokenizer):
  state = _loader(tokenizer, process=(0, 2)).get_state()
  with pytest.raises(ValueError, match='no state for data shard 1'):
    _loader(tokenizer, process=(1, 2)).set_state(state)


def test_shard_spec():
  spec = ShardSpec.create(batch_size=8, num_shards=4, process_index=1, process_count=2)
  assert (spec.num_shards, spec.local_shards, spec.rows_per_shard) == (4, (2, 3), 2)
  spec = ShardSpec.create(batch_size=6, num_shards=0, process_index=2, process_count=3)
  assert (spec.num_shards, spec.local_shards, spec.rows_per_shard) == (3, (2,), 2)
  with pytest.raises(ValueError, match=r'batch_size=10 cannot be split .*num_shards=4.*multiple'):
    ShardSpec.create(10, 4, 0, 1)
  with pytest.raises(ValueError, match=r'num_shards=4 must be a multiple of the 3 processes'):
    ShardSpec.create(12, 4, 0, 3)


def _segment_contents(batch, tokenizer):
  """Content tokens (framing stripped) of every segment of every row, in order."""
  out = []
  for tokens, segment_ids in zip(batch['targets'], batch['segment_ids'], strict=True):
    for s in range(1, segment_ids.max() + 1):
      piece = tokens[segment_ids == s]
      assert piece[0] == tokenizer.cls_id and piece[-1] == tokenizer.sep_id
      out.append(piece[1:-1])
  return out


def test_eval_one_pass(tokenizer):
  batches = list(_loader(tokenizer, split='eval'))  # Stops by itself.
  assert 5 < len(batches) < 100
  # Shard s holds documents s, s + 2, ...; each shard's rows hold its documents in order.
  docs = sources.load_documents(base.get_config().data, 'eval')
  rows_per_shard = BATCH // SHARDS
  real_rows = []
  for shard in range(SHARDS):
    parts = [
      {k: v[shard * rows_per_shard : (shard + 1) * rows_per_shard] for k, v in b.items()}
      for b in batches
    ]
    content = np.concatenate([c for part in parts for c in _segment_contents(part, tokenizer)])
    expected = np.concatenate([tokenizer.encode(docs[i]) for i in range(shard, len(docs), SHARDS)])
    np.testing.assert_array_equal(content, expected)
    real = np.concatenate([(part['segment_ids'] > 0).any(axis=1) for part in parts])
    assert real[: real.sum()].all()  # Padding rows only after the shard's last real row.
    real_rows.append(int(real.sum()))
  assert len(batches) == max(-(-n // rows_per_shard) for n in real_rows)  # Exactly one pass.
  for batch in batches:
    assert (batch['weights'][batch['segment_ids'] == 0] == 0).all()

  padded = _loader(tokenizer, split='eval', pad_after_end=True)
  _assert_batches_equal(_take(padded, len(batches)), batches)
  for batch in _take(padded, 3):  # After the end: all padding, still in lockstep.
    assert batch['inputs'].shape == (BATCH, SEQ_LEN)
    assert (batch['segment_ids'] == 0).all() and (batch['weights'] == 0).all()


NUM_DOCS = 16


def _one_doc_per_row_loader(seed=0):
  """A fake tokenizer: document i is three copies of id 100 + i; a row of 12
  holds exactly one (5 tokens framed, 7 left < 8), so rows show the order."""
  tok = SimpleNamespace(
    encode=lambda text: np.array([int(w) for w in text.split()], np.int32), cls_id=1, sep_id=2
  )
  docs = [' '.join([str(100 + i)] * 3) for i in range(NUM_DOCS)]
  return Loader(
    docs,
    tok,
    shards=ShardSpec.create(2, 1, 0, 1),
    seq_len=12,
    framing=('cls_id', 'sep_id'),
    preprocess=lambda batch: batch,
    seed=seed,
    train=True,
  )


def test_epochs_reshuffle():
  batches = _take(_one_doc_per_row_loader(), 3 * NUM_DOCS // 2)
  rows = [{k: v[i] for k, v in batch.items()} for batch in batches for i in range(2)]
  order = [int(row['tokens'][1]) - 100 for row in rows]
  epochs = [int(row['epoch']) for row in rows]
  assert epochs == [0] * NUM_DOCS + [1] * NUM_DOCS + [2] * NUM_DOCS
  assert [int(row['example_id']) for row in rows] == list(range(3 * NUM_DOCS))
  orders = [order[e * NUM_DOCS : (e + 1) * NUM_DOCS] for e in range(3)]
  for o in orders:
    assert sorted(o) == list(range(NUM_DOCS))  # Each epoch sees every document once.
  assert orders[0] != list(range(NUM_DOCS))  # Shuffled ...
  assert orders[0] != orders[1] and orders[1] != orders[2]  # ... afresh every epoch.
  other_seed = _take(_one_doc_per_row_loader(seed=1), NUM_DOCS // 2)
  assert [int(t) - 100 for b in other_seed for t in b['tokens'][:, 1]] != orders[0]


def test_resume_across_epochs():
  loader = _one_doc_per_row_loader()
  for restore in range(10):  # Every 3 batches, across 3 epoch ends (every 8 batches).
    state = json.loads(json.dumps(loader.get_state()))
    restored = _one_doc_per_row_loader()
    restored.set_state(state)
    expected = _take(loader, 3)
    for a, b in zip(_take(restored, 3), expected, strict=True):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} after {3 * restore} batches')
    loader = restored  # Go on from the restored loader: it must not drift either.


def test_token_keys_name_each_tokens_document_and_offset(tokenizer):
  """Rows carry token_keys = doc << 24 | offset: the token at that place of that document."""
  documents = sources.load_documents(base.get_config().data, 'train')
  loader = _loader(tokenizer, preprocess=lambda rows: rows)
  for rows in _take(loader, 6):
    keys, tokens = rows['token_keys'], rows['tokens']
    framed = np.isin(tokens, [tokenizer.cls_id, tokenizer.sep_id]) | (rows['segment_ids'] == 0)
    assert np.all((keys == 0) == framed)
    for b, i in zip(*np.nonzero(~framed), strict=True):
      doc, offset = int(keys[b, i]) >> 24, int(keys[b, i]) & (2**24 - 1)
      assert tokenizer.encode(documents[doc])[offset] == tokens[b, i]
