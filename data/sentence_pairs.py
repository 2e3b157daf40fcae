"""Sentence-pair rows for NSP (BERT) and SOP (ALBERT), as a checkpointable Grain stage.

The construction of Google's create_pretraining_data.py, one instance per row:
documents are split into sentences; sentences of a document are gathered into a
chunk until it holds `target` tokens (the row's room, seq_len - 3, or with
probability `short_seq_prob` a random length in [2, room], so that fine-tuning
on short inputs is not out of distribution); a random split point makes A from
the first sentences of the chunk and B from the rest. Then

- NSP: with probability 1/2 (always, when the chunk is one sentence) B is
  replaced by sentences from a random start in another document, label 1, and
  the sentences not used are put back for the next instance; otherwise label 0.
- SOP: with probability 1/2 A and B are swapped, label 1 (ALBERT's code still
  takes a random document when the chunk is one sentence, and so do we).

The pair is truncated to the room by dropping tokens of the longer side, each
from its front or back at random, and framed as [CLS] A [SEP] B [SEP], one
attention segment with token types 0 then 1.

Randomness: every draw of an instance is a function of (seed, epoch, example id)
through data/host_random, the example id being the row counter times
num_shards plus the shard, as in data/packing.py; the state (data/document_rows.py:
the parent's state before the current document, the next sentence, rows emitted)
restores exactly.
"""

import functools
import re

import grain
import numpy as np

from data import document_rows, host_random

KINDS = ('nsp', 'sop')
# A sentence ends at . ! ? followed by space (a line break included), at their CJK
# forms, or at a blank line; a single line break inside a sentence is wrapping.
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+|\s*\n\s*\n\s*|(?<=[。！？])')
# Draws per instance: short?, target, split, swap/random?, document, start, truncation.
_DRAWS = 7
# Documents whose sentence split is kept for NSP's random segments.
_SPLIT_CACHE = 4096


def split_sentences(text: str) -> list[str]:
  """The non-empty sentences of `text`."""
  return [s for s in (' '.join(p.split()) for p in _SENTENCE_END.split(text)) if s]


def truncate_pair(a: np.ndarray, b: np.ndarray, room: int, draw: float):
  """Drops tokens from the longer of `a`, `b` until both fit in `room`, each from its
  front or back with probability 1/2, as BERT's truncate_seq_pair; the front/back
  counts are binomial draws seeded by `draw`, not a loop over tokens."""
  excess = len(a) + len(b) - room
  if excess <= 0:
    return a, b
  # The longer side loses tokens until the two are level (B when they are equal),
  # then they lose one each in turn, B first.
  gap = abs(len(a) - len(b))
  first = min(excess, gap)
  rest = excess - first
  cut_a = (first if len(a) > len(b) else 0) + rest // 2
  cut_b = excess - cut_a
  rng = np.random.default_rng(int(draw * 2**53))
  out = []
  for side, cut in ((a, cut_a), (b, cut_b)):
    front = int(rng.binomial(cut, 0.5)) if cut else 0
    out.append(side[front : len(side) - (cut - front)])
  return out[0], out[1]


def sentence_pair_rows(
  parent: grain.IterDataset,
  documents,
  tokenizer,
  *,
  kind: str,
  seq_len: int,
  short_seq_prob: float,
  seed: int,
  shard_index: int,
  num_shards: int,
) -> grain.IterDataset:
  """Rows {tokens, token_types, segment_ids, positions: [seq_len], pair_labels, epoch,
  example_id} from a stream of {'text', 'epoch', 'doc'} documents.

  `documents` is the shard's random-access document list, where NSP's random
  second segments come from.
  """
  if kind not in KINDS:
    raise ValueError(f'objective.pair_kind={kind!r} must be one of {KINDS}.')
  if seq_len < 8:
    raise ValueError(f'seq_len={seq_len} is too short for sentence pairs; use at least 8.')
  if not 0.0 <= short_seq_prob <= 1.0:
    raise ValueError(f'objective.short_seq_prob={short_seq_prob} must be in [0, 1].')
  return document_rows.DocumentRows(
    parent,
    functools.partial(
      _PairIterator,
      documents=documents,
      tokenizer=tokenizer,
      kind=kind,
      seq_len=seq_len,
      short_seq_prob=short_seq_prob,
      seed=seed,
      shard_index=shard_index,
      num_shards=num_shards,
    ),
  )


class _PairIterator(document_rows.DocumentItemsIterator):
  def __init__(self, parent, *, documents, tokenizer, kind, seq_len, short_seq_prob, seed, **shard):
    super().__init__(parent, **shard)
    self._documents, self._tokenizer, self._kind = documents, tokenizer, kind
    self._seq_len, self._short_seq_prob, self._seed = seq_len, short_seq_prob, seed
    self._split_cache = {}  # Document index -> its sentences (a cache, not state).

  def _split(self, index: int) -> list[str]:
    """The sentences of document `index`, recently used ones cached (the split is a
    third of the cost of a random segment)."""
    if index not in self._split_cache:
      if len(self._split_cache) >= _SPLIT_CACHE:
        self._split_cache.pop(next(iter(self._split_cache)))  # The oldest entry.
      self._split_cache[index] = split_sentences(self._documents[index])
    return self._split_cache[index]

  def _sentences(self, text: str) -> list[np.ndarray]:
    encoded = (self._tokenizer.encode(s) for s in split_sentences(text))
    return [s for s in encoded if len(s)]

  def _load(self, doc: dict) -> dict:
    return {'items': self._sentences(doc['text']), 'epoch': doc['epoch'], 'doc': doc['doc']}

  def _random_segment(self, own_doc: int, target: int, u_doc: float, u_start: float):
    """Sentences from a random start in another document, up to `target` tokens."""
    n = len(self._documents)
    index = min(int(u_doc * (n - 1)), n - 2) if n > 1 else 0
    local_own = own_doc // self._num_shards
    if n > 1 and index >= local_own:
      index += 1  # Any document but this one.
    # Only the sentences taken are tokenized: a random document is read from a random
    # sentence on, until `target` tokens (tokenizing it whole would triple the cost).
    texts = self._split(index)
    start = min(int(u_start * len(texts)), len(texts) - 1) if texts else 0
    taken, length = [], 0
    for text in texts[start:]:
      sentence = self._tokenizer.encode(text)
      if len(sentence):
        taken.append(sentence)
        length += len(sentence)
      if length >= target:
        break
    return np.concatenate(taken) if taken else self._doc['items'][0]

  def __next__(self) -> dict:
    if not self._advance():
      raise StopIteration
    doc, room = self._doc, self._seq_len - 3
    example_id = self._example_id
    u = host_random.uniform(self._seed, doc['epoch'], np.array([example_id]), _DRAWS, 0)[0]
    target = room
    if u[0] < self._short_seq_prob:
      target = 2 + min(int(u[1] * (room - 1)), room - 2)  # randint(2, room)
    chunk, length = [], 0
    sentences = doc['items']
    while self._next_item < len(sentences) and length < target:
      chunk.append(sentences[self._next_item])
      length += len(chunk[-1])
      self._next_item += 1
    a_end = 1 if len(chunk) < 2 else 1 + min(int(u[2] * (len(chunk) - 1)), len(chunk) - 2)
    a = np.concatenate(chunk[:a_end])
    label = 0
    if len(chunk) == 1 or (self._kind == 'nsp' and u[3] < 0.5):
      b = self._random_segment(doc['doc'], max(target - len(a), 1), u[4], u[5])
      self._next_item -= len(chunk) - a_end  # Unused sentences go to the next instance.
      label = 1
    else:
      b = np.concatenate(chunk[a_end:])
      if self._kind == 'sop' and u[3] < 0.5:
        a, b, label = b, a, 1
    a, b = truncate_pair(a, b, room, u[6])
    tokenizer = self._tokenizer
    pair = np.concatenate([[tokenizer.cls_id], a, [tokenizer.sep_id], b, [tokenizer.sep_id]])
    tokens = np.zeros(self._seq_len, np.int32)  # [seq_len]
    token_types = np.zeros(self._seq_len, np.int32)
    segment_ids = np.zeros(self._seq_len, np.int32)
    positions = np.zeros(self._seq_len, np.int32)
    tokens[: len(pair)] = pair
    token_types[len(a) + 2 : len(pair)] = 1
    segment_ids[: len(pair)] = 1
    positions[: len(pair)] = np.arange(len(pair))
    self._rows += 1
    return {
      'tokens': tokens,
      'token_types': token_types,
      'segment_ids': segment_ids,
      'positions': positions,
      'pair_labels': np.int32(label),
      'epoch': np.int64(doc['epoch']),
      'example_id': np.int64(example_id),
    }
