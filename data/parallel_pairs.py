"""Rows of translation pairs, for XLM's TLM and cross-lingual contrastive objectives.

Parallel text comes as ordinary text documents whose lines are `source<TAB>target`
(data.source='text' with a .tsv file; blank lines may separate documents, lines
without a tab are an error that names the line). Pairs are packed several to a
row, in order, until the row is full or holds `max_pairs`:

- joint (XLM's TLM, Conneau & Lample 2019, section 3.3): one attention segment
  per pair, [CLS] source [SEP] target [SEP], positions restarting at the target,
  so that a masked word can be read off its translation;
- separate (translation ranking / contrastive): the source and the target are
  two attention segments, 2k-1 and 2k for the k-th pair, each [CLS] ... [SEP],
  encoded apart so that their pooled states can be compared.

`token_types` hold the language of every token (0 for the first column's
language, 1 for the second's: XLM's language embeddings, through the token-type
table). Nothing here is random, so a restored run reads on exactly from where
it stopped (state: data/document_rows.py).
"""

import functools

import grain
import numpy as np

from data import document_rows

_MIN_SIDE = 2  # Tokens kept of each side when a pair must be cut to fit a row.


def split_pair(line: str, where: str) -> tuple[str, str]:
  source, tab, target = line.partition('\t')
  if not tab or not source.strip() or not target.strip():
    raise ValueError(
      f'{where}: parallel lines must be "source<TAB>target", both non-empty; got {line[:80]!r}.'
    )
  return source.strip(), target.strip()


def parallel_pair_rows(
  parent: grain.IterDataset,
  tokenizer,
  *,
  joint: bool,
  seq_len: int,
  max_pairs: int,
  shard_index: int,
  num_shards: int,
) -> grain.IterDataset:
  """Rows {tokens, token_types, segment_ids, positions: [seq_len], epoch, example_id}
  from a stream of {'text', 'epoch', 'doc'} documents of tab-separated lines."""
  if seq_len < 16:
    raise ValueError(f'seq_len={seq_len} is too short for translation pairs; use >= 16.')
  if max_pairs < 1:
    raise ValueError(f'objective.max_pairs={max_pairs} must be >= 1.')
  return document_rows.DocumentRows(
    parent,
    functools.partial(
      _ParallelIterator,
      tokenizer=tokenizer,
      joint=joint,
      seq_len=seq_len,
      max_pairs=max_pairs,
      shard_index=shard_index,
      num_shards=num_shards,
    ),
  )


class _ParallelIterator(document_rows.DocumentItemsIterator):
  def __init__(self, parent, *, tokenizer, joint, seq_len, max_pairs, **shard):
    super().__init__(parent, **shard)
    self._tokenizer, self._joint = tokenizer, joint
    self._seq_len, self._max_pairs = seq_len, max_pairs

  def _load(self, doc: dict) -> dict:
    lines = [line for line in doc['text'].split('\n') if line.strip()]
    return {'items': lines, 'epoch': doc['epoch'], 'doc': doc['doc']}

  def _pieces(self, room: int) -> list[tuple[np.ndarray, int, bool]]:
    """The current line as [(framed ids, language, starts a segment)], cut to `room`."""
    where = f'document {self._doc["doc"]}, line {self._next_item + 1}'
    source, target = split_pair(self._doc['items'][self._next_item], where)
    cls, sep = self._tokenizer.cls_id, self._tokenizer.sep_id
    ids = [self._tokenizer.encode(source), self._tokenizer.encode(target)]
    framing = 3 if self._joint else 4  # [CLS] s [SEP] t [SEP], or [CLS] s [SEP] [CLS] t [SEP]
    budget = room - framing
    if len(ids[0]) + len(ids[1]) > budget:  # Cut the longer side first, keep both.
      keep_short = min(min(map(len, ids)), budget // 2)
      long_side = int(len(ids[1]) > len(ids[0]))
      ids[1 - long_side] = ids[1 - long_side][:keep_short]
      ids[long_side] = ids[long_side][: budget - keep_short]
    if self._joint:
      return [(np.concatenate([[cls], ids[0], [sep]]), 0, True), (np.append(ids[1], sep), 1, False)]
    return [(np.concatenate([[cls], side, [sep]]), lang, True) for lang, side in enumerate(ids)]

  def __next__(self) -> dict:
    length = self._seq_len
    tokens = np.zeros(length, np.int32)  # [seq_len]
    token_types = np.zeros(length, np.int32)
    segment_ids = np.zeros(length, np.int32)
    positions = np.zeros(length, np.int32)
    fill, segment, pairs, epoch = 0, 0, 0, None
    while pairs < self._max_pairs and self._advance():
      room = length - fill
      if room < 2 * _MIN_SIDE + 4 or (fill and room < 16):
        break  # Too little room left for a pair: pad the row, start the next one.
      for ids, language, new_segment in self._pieces(room):
        segment += new_segment
        end = fill + len(ids)
        tokens[fill:end], token_types[fill:end] = ids, language
        segment_ids[fill:end], positions[fill:end] = segment, np.arange(len(ids))
        fill = end
      epoch = self._doc['epoch'] if epoch is None else epoch
      pairs += 1
      self._next_item += 1
    if fill == 0:
      raise StopIteration
    example_id = self._example_id
    self._rows += 1
    return {
      'tokens': tokens,
      'token_types': token_types,
      'segment_ids': segment_ids,
      'positions': positions,
      'epoch': np.int64(epoch),
      'example_id': np.int64(example_id),
    }
