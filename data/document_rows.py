"""What the row builders that read documents item by item share: their checkpoint state.

Sentence pairs (data/sentence_pairs.py) and translation pairs
(data/parallel_pairs.py) read a stream of documents, split each into items
(sentences, parallel lines) and emit rows from consecutive items. Their state is
the parent's state before the current document, the index of the next item in
it and the rows emitted; restoring re-reads that one document, as packing does
(data/packing.py). The example id of a row (the key of its random draws) is the
row counter times num_shards plus the shard, as for packed rows.
"""

import copy

import grain


class DocumentItemsIterator(grain.DatasetIterator):
  """Base of a row builder: `_load(doc)` returns the document with its 'items' list;
  a subclass's `__next__` reads `self._doc['items'][self._next_item]` onwards,
  calling `_advance()` to reach a document with items left."""

  def __init__(self, parent, *, shard_index: int, num_shards: int):
    super().__init__(parent)
    self._shard_index, self._num_shards = shard_index, num_shards
    self._doc_state = copy.deepcopy(parent.get_state())  # Parent state before `_doc`.
    self._doc = None  # The loaded document being read: {'items', 'epoch', 'doc', ...}.
    self._next_item = 0
    self._rows = 0

  def _load(self, doc: dict) -> dict:
    raise NotImplementedError

  def _advance(self) -> bool:
    """Moves to the next document with items left; False at the end of the data."""
    while self._doc is None or self._next_item >= len(self._doc['items']):
      self._doc_state = copy.deepcopy(self._parent.get_state())
      try:
        self._doc = self._load(next(self._parent))
      except StopIteration:
        self._doc = None
        return False
      self._next_item = 0
    return True

  @property
  def _example_id(self) -> int:
    """The example id of the row being built (counted by `self._rows`)."""
    return self._rows * self._num_shards + self._shard_index

  def get_state(self) -> dict:
    return {
      'parent': copy.deepcopy(self._doc_state),
      'has_doc': self._doc is not None,
      'next_item': self._next_item,
      'rows': self._rows,
    }

  def set_state(self, state: dict):
    self._parent.set_state(copy.deepcopy(state['parent']))
    self._doc_state = copy.deepcopy(state['parent'])
    self._doc = self._load(next(self._parent)) if state['has_doc'] else None
    self._next_item = state['next_item']
    self._rows = state['rows']


class DocumentRows(grain.IterDataset):
  """A row builder as a Grain dataset: `make_iterator(parent iterator)` is its iterator
  (a DocumentItemsIterator with the builder's settings bound)."""

  def __init__(self, parent: grain.IterDataset, make_iterator):
    super().__init__(parent)
    self._make_iterator = make_iterator

  def __iter__(self) -> grain.DatasetIterator:
    return self._make_iterator(self._parent.__iter__())
