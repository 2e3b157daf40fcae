"""Sentence-pair rows (NSP / SOP): the construction of BERT's create_pretraining_data."""

import grain
import numpy as np
import pytest

from data import sentence_pairs

CLS, SEP = 2, 3


class _WordTokenizer:
  """Word i of the corpus vocabulary is id 10 + i: every token traces back to its word."""

  cls_id, sep_id = CLS, SEP

  def __init__(self, words):
    self.ids = {w: 10 + i for i, w in enumerate(words)}

  def encode(self, text):
    return np.array([self.ids[w] for w in text.replace('.', '').split()], np.int32)


def _corpus(num_docs=60, sentences=12):
  """Documents whose words are unique, `w<doc>_<sentence>_<k>`, so a token names its place."""
  rng = np.random.default_rng(0)
  docs, words = [], []
  for d in range(num_docs):
    text = []
    for s in range(sentences):
      sentence = [f'w{d}_{s}_{k}' for k in range(int(rng.integers(3, 12)))]
      words += sentence
      text.append(' '.join(sentence) + '.')
    docs.append(' '.join(text))
  return docs, _WordTokenizer(words)


def _rows(kind, n, seq_len=48, short_seq_prob=0.1, seed=0, state=None, docs=None):
  docs, tokenizer = docs or _corpus()
  source = grain.MapDataset.source(docs)
  stream = source.map_with_index(lambda j, t: (j % len(docs), t)).shuffle(seed=seed).repeat(None)
  stream = stream.map_with_index(
    lambda i, it: {'text': it[1], 'epoch': i // len(docs), 'doc': it[0]}
  )
  pairs = sentence_pairs.sentence_pair_rows(
    stream.to_iter_dataset(),
    source,
    tokenizer,
    kind=kind,
    seq_len=seq_len,
    short_seq_prob=short_seq_prob,
    seed=seed,
    shard_index=0,
    num_shards=1,
  )
  it = iter(pairs)
  if state is not None:
    it.set_state(state)
  return it, [next(it) for _ in range(n)], {v: w for w, v in tokenizer.ids.items()}


def _sides(row):
  n = int(np.sum(row['segment_ids'] > 0))
  tokens, types = row['tokens'][:n], row['token_types'][:n]
  assert tokens[0] == CLS and tokens[n - 1] == SEP and np.sum(tokens == SEP) == 2
  a_len = int(np.sum(types == 0)) - 2
  assert tokens[a_len + 1] == SEP and np.all(types[a_len + 2 :] == 1)
  return tokens[1 : a_len + 1], tokens[a_len + 2 : n - 1]


def _place(token, words):
  d, s, k = words[int(token)][1:].split('_')
  return int(d), int(s), int(k)


def _contiguous(tokens, words):
  """True when `tokens` are consecutive words of one document (sentences in order)."""
  places = [_place(t, words) for t in tokens]
  order = [(d, s, k) for d, s, k in places]
  return len({d for d, _, _ in places}) == 1 and order == sorted(order)


@pytest.mark.parametrize('kind', ['nsp', 'sop'])
def test_pairs_are_framed_and_labelled_as_built(kind):
  _, rows, words = _rows(kind, 2000)
  labels, multi = [], []
  for row in rows:
    a, b = _sides(row)
    assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) + 3 <= 48
    assert np.all(row['positions'][: len(a) + len(b) + 3] == np.arange(len(a) + len(b) + 3))
    doc_a, doc_b = _place(a[0], words)[0], _place(b[0], words)[0]
    label = int(row['pair_labels'])
    assert _contiguous(a, words) and _contiguous(b, words)
    if label == 0:  # The true continuation: A then B within one document.
      assert doc_a == doc_b and _place(a[-1], words) < _place(b[0], words)
    elif kind == 'sop' and doc_a == doc_b:  # Swapped: B comes first in the document.
      assert _place(b[-1], words) < _place(a[0], words)
    else:  # NSP's (and one-sentence SOP chunks') random next segment: another document.
      assert doc_a != doc_b
    labels.append(label)
    multi.append(doc_a == doc_b or label == 0)
  labels, multi = np.array(labels), np.array(multi)
  if kind == 'sop':
    # Pairs from one document come from chunks of two or more sentences: a fair coin.
    same_doc = labels[multi]
    assert abs(same_doc.mean() - 0.5) < 5 * np.sqrt(0.25 / len(same_doc)), same_doc.mean()
  else:
    # NSP: 1/2, plus the one-sentence chunks that always take a random next segment.
    bound = 5 * np.sqrt(0.25 / len(labels))
    assert 0.5 - bound < labels.mean() < 0.7, labels.mean()


def test_short_sequence_probability():
  long_docs = _corpus(num_docs=20, sentences=80)  # Few rows end a document early.
  _, full, _ = _rows('nsp', 600, seq_len=64, short_seq_prob=0.0, docs=long_docs)
  _, short, _ = _rows('nsp', 600, seq_len=64, short_seq_prob=1.0, docs=long_docs)
  length = lambda rows: np.array([np.sum(r['segment_ids'] > 0) for r in rows])  # noqa: E731
  # Without short targets most rows are filled to the brim; with them the target is
  # uniform in [2, 61], so the mean length falls towards half the row.
  assert np.mean(length(full) == 64) > 0.8
  assert np.mean(length(short)) < 0.75 * np.mean(length(full))
  assert np.mean(length(short) == 64) < 0.3


def test_truncation_cuts_the_longer_side_front_or_back():
  a, b = np.arange(100), np.arange(100, 120)
  fronts = 0
  for i in range(200):
    ta, tb = sentence_pairs.truncate_pair(a, b, 61, draw=(i + 0.5) / 200)
    assert len(ta) + len(tb) == 61 and len(tb) == 20 and len(ta) == 41
    assert np.all(np.diff(ta) == 1)  # A contiguous piece of A: cut at the ends only.
    fronts += int(ta[0])
  # 59 cuts per pair, each from the front with probability 1/2.
  assert abs(fronts / 200 - 29.5) < 5 * np.sqrt(59 / 4 / 200)
  ta, tb = sentence_pairs.truncate_pair(np.arange(30), np.arange(30), 40, draw=0.3)
  assert (len(ta), len(tb)) == (20, 20)


def test_state_restores_exactly_and_draws_are_deterministic():
  it, first, _ = _rows('nsp', 37)
  state = it.get_state()
  after = [next(it) for _ in range(25)]
  _, restored, _ = _rows('nsp', 25, state=state)
  for x, y in zip(after, restored, strict=True):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  _, again, _ = _rows('nsp', 37)
  assert all(np.array_equal(x['tokens'], y['tokens']) for x, y in zip(first, again, strict=True))
  _, other_seed, _ = _rows('nsp', 37, seed=1)
  assert not all(
    np.array_equal(x['tokens'], y['tokens']) for x, y in zip(first, other_seed, strict=True)
  )


def test_split_sentences():
  text = 'One two. Three?  Four!\nFive\nsix\n\n 七。八'  # A lone line break is wrapping.
  assert sentence_pairs.split_sentences(text) == [
    'One two.',
    'Three?',
    'Four!',
    'Five six',
    '七。',
    '八',
  ]


def test_bad_kind_is_an_error():
  with pytest.raises(ValueError, match='pair_kind'):
    _rows('xnsp', 1)
