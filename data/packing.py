"""Packing tokenized documents into fixed-length rows, as a checkpointable Grain stage.

Each row of `seq_len` tokens holds one or more segments; a segment is a piece of
one document framed by two special tokens ([CLS] ... [SEP] for BERT, BOS ... EOS
for GPT). A document longer than the room left in a row is split: its first
piece ends the row and the rest continues in the next row as a new segment, so
almost nothing is padded. Segment ids count 1, 2, ... within a row (0 is
padding) and positions restart at 0 in every segment, so a packed document is
seen exactly as it would be alone.

Every row also carries `epoch` (of the document that starts it) and
`example_id` (row counter * num_shards + shard), the keys of derived randomness,
and, when the documents carry their corpus index `doc`, `token_keys`: each
token's document and offset, so that a draw can follow the token, not the row.
Per-token arrays a document carries (`token_arrays`) are packed alongside its tokens:
boolean flags (unit starts from annotated spans) True on framing, False on padding; other
arrays, [n] or [n, k] (a page's word boxes, data/layout.py), zeros on both.
"""

import copy

import grain
import numpy as np

# A row with less room than this is padded instead of taking a tiny fragment.
_MIN_ROOM = 8


class PackedRows(grain.IterDataset):
  """Rows {tokens, segment_ids, positions: [seq_len], epoch, example_id} from documents.

  The parent yields {'tokens': int32 [n], 'epoch': int} per document.
  """

  def __init__(
    self,
    parent: grain.IterDataset,
    *,
    seq_len: int,
    prefix_id: int,
    suffix_id: int,
    shard_index: int,
    num_shards: int,
  ):
    super().__init__(parent)
    if seq_len < _MIN_ROOM:
      raise ValueError(f'seq_len={seq_len} is too short to pack; use at least {_MIN_ROOM}.')
    self._kwargs = dict(
      seq_len=seq_len,
      prefix_id=prefix_id,
      suffix_id=suffix_id,
      shard_index=shard_index,
      num_shards=num_shards,
    )

  def __iter__(self) -> grain.DatasetIterator:
    return _PackIterator(self._parent.__iter__(), **self._kwargs)


class _PackIterator(grain.DatasetIterator):
  """State: the parent's state before the current document, the offset into it,
  and the number of rows emitted. Restoring re-reads that one document."""

  def __init__(self, parent, *, seq_len, prefix_id, suffix_id, shard_index, num_shards):
    super().__init__(parent)
    self._seq_len = seq_len
    self._frame = (prefix_id, suffix_id)
    self._shard_index, self._num_shards = shard_index, num_shards
    self._doc_state = copy.deepcopy(parent.get_state())  # Parent state before `_doc`.
    self._doc = None  # {'tokens', 'epoch'} being packed, or None.
    self._offset = 0
    self._rows = 0
    self._keyed = False  # Whether the documents carry their corpus index ('doc').

  def _next_document(self) -> bool:
    """Moves to the next non-empty document; False at the end of the data."""
    while True:
      self._doc_state = copy.deepcopy(self._parent.get_state())
      try:
        doc = next(self._parent)
      except StopIteration:
        self._doc = None
        return False
      if len(doc['tokens']):
        self._doc, self._offset = doc, 0
        self._keyed = 'doc' in doc
        return True

  def __next__(self) -> dict:
    length = self._seq_len
    tokens = np.zeros(length, np.int32)  # [seq_len]
    segment_ids = np.zeros(length, np.int32)
    positions = np.zeros(length, np.int32)
    # Each token's place in the corpus, when the documents say which they are
    # (the loader's do): document index << 24 | offset in the document; 0 on framing
    # and padding. Static masking (mlm.py, dupe_factor) draws per place, not per row.
    token_keys = np.zeros(length, np.int64)
    # Per-token arrays (data/loader.py): flags True on framing, other values 0.
    arrays = {}
    fill, segment, epoch = 0, 0, None
    while length - fill >= _MIN_ROOM:
      if self._doc is None or self._offset >= len(self._doc['tokens']):
        if not self._next_document():
          break
      doc_tokens = self._doc['tokens']
      take = min(length - fill - 2, len(doc_tokens) - self._offset)
      piece = np.concatenate(
        [[self._frame[0]], doc_tokens[self._offset : self._offset + take], [self._frame[1]]]
      )
      segment += 1
      tokens[fill : fill + len(piece)] = piece
      segment_ids[fill : fill + len(piece)] = segment
      positions[fill : fill + len(piece)] = np.arange(len(piece))
      for name, values in self._doc.get('token_arrays', {}).items():
        flags = values.dtype == bool
        row_values = arrays.setdefault(  # [seq_len, ...]
          name, np.full((length, *values.shape[1:]), flags, values.dtype)
        )
        row_values[fill + 1 : fill + 1 + take] = values[self._offset : self._offset + take]
      if self._keyed:
        offsets = np.arange(self._offset, self._offset + take, dtype=np.int64)
        token_keys[fill + 1 : fill + 1 + take] = (np.int64(self._doc['doc']) << 24) | offsets
      epoch = self._doc['epoch'] if epoch is None else epoch
      fill += len(piece)
      self._offset += take
    if fill == 0:
      raise StopIteration
    example_id = self._rows * self._num_shards + self._shard_index
    self._rows += 1
    row = {
      'tokens': tokens,
      'segment_ids': segment_ids,
      'positions': positions,
      'epoch': np.int64(epoch),
      'example_id': np.int64(example_id),
    }
    if self._keyed:
      row['token_keys'] = token_keys
    for name, values in arrays.items():
      real = (segment_ids > 0).reshape(length, *[1] * (values.ndim - 1))
      row[name] = values & real if values.dtype == bool else values * real  # Padding: none.
    return row

  def get_state(self) -> dict:
    return {
      'parent': copy.deepcopy(self._doc_state),
      'has_doc': self._doc is not None,
      'offset': self._offset,
      'rows': self._rows,
    }

  def set_state(self, state: dict):
    self._parent.set_state(copy.deepcopy(state['parent']))
    self._doc_state = copy.deepcopy(state['parent'])
    self._doc = next(self._parent) if state['has_doc'] else None
    self._keyed = self._doc is not None and 'doc' in self._doc
    self._offset = state['offset']
    self._rows = state['rows']
