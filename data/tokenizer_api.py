"""The tokenizer interface every tokenizer implements (SentencePiece, WordPiece).

Every tokenizer exposes the same special ids (pad, unk, cls, sep, mask, bos,
eos) so objectives never care which kind is loaded. `fingerprint()` hashes the
model or vocabulary file, so a checkpoint can check it is paired with the
tokenizer it was trained with.
"""

import abc
import hashlib
from collections.abc import Sequence

import numpy as np


class Tokenizer(abc.ABC):
  """Common interface of SentencePiece and WordPiece tokenizers.

  Attributes:
    path: The file the tokenizer was loaded from.
    vocab_size: Number of ids; every id is in [0, vocab_size).
    pad_id, unk_id, cls_id, sep_id, mask_id, bos_id, eos_id: Special ids.
  """

  path: str
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int
  bos_id: int
  eos_id: int

  def __init__(self, path: str, file_bytes: bytes):
    self.path = path
    self._sha256 = hashlib.sha256(file_bytes).hexdigest()

  def _check_special_ids(self) -> None:
    names = ('pad_id', 'unk_id', 'cls_id', 'sep_id', 'mask_id', 'bos_id', 'eos_id')
    for name in names:
      value = getattr(self, name)
      if not 0 <= value < self.vocab_size:
        raise ValueError(f'{self.path}: {name}={value} is not in [0, {self.vocab_size}).')

  @property
  def special_ids(self) -> np.ndarray:
    """Sorted int32 ids that are never masked or predicted: pad, unk, cls, sep, mask, bos, eos."""
    ids = [self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.bos_id]
    return np.unique(np.asarray(ids + [self.eos_id], np.int32))

  def fingerprint(self) -> str:
    """Returns the sha256 hex digest of the model or vocab file bytes."""
    return self._sha256

  @abc.abstractmethod
  def encode(self, text: str) -> np.ndarray:
    """Returns the int32 ids of `text`, with no special tokens added."""

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, ends): the ids of `text` and, for each, the character index just past its
    last character (how annotated character spans find their tokens)."""
    raise NotImplementedError(
      f'{type(self).__name__} gives no character offsets; annotated spans '
      '(data.span_fields) need a SentencePiece tokenizer.'
    )

  @abc.abstractmethod
  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Returns the text of `ids`, skipping padding."""

  @abc.abstractmethod
  def id_to_piece(self, i: int) -> str:
    """Returns the vocabulary piece of id `i`."""
