"""The tokenizer interface, SentencePiece models, and finding or training one.

Every tokenizer exposes the same special ids (pad, unk, cls, sep, mask, bos,
eos) so objectives never care which kind is loaded. A SentencePiece model
trained here has pad=0, unk=1, bos=2, eos=3 and [CLS], [SEP], [MASK] as
user-defined symbols 4, 5, 6. `fingerprint()` hashes the model file, so a
checkpoint can check it is paired with the tokenizer it was trained with.
"""

import abc
import hashlib
import io
import os
from collections.abc import Callable, Sequence

import numpy as np
import sentencepiece as spm
from ml_collections import config_dict

from data.sources import load_documents

SPECIAL_PIECES = ('[CLS]', '[SEP]', '[MASK]')
MODEL_TYPES = ('unigram', 'bpe', 'char', 'word')


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


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model with [CLS], [SEP] and [MASK] pieces."""

  def __init__(self, model_path: str):
    with open(model_path, 'rb') as f:
      model_bytes = f.read()
    super().__init__(model_path, model_bytes)
    self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    self.vocab_size = self._sp.get_piece_size()
    self.unk_id = self._sp.unk_id()
    self.pad_id, self.bos_id, self.eos_id = self._sp.pad_id(), self._sp.bos_id(), self._sp.eos_id()
    disabled = [
      n for n, i in (('pad', self.pad_id), ('bos', self.bos_id), ('eos', self.eos_id)) if i < 0
    ]
    missing = [p for p in SPECIAL_PIECES if self._sp.piece_to_id(p) == self.unk_id]
    if missing or disabled:
      raise ValueError(
        f'SentencePiece model {model_path} lacks pieces {missing} and/or ids {disabled}; '
        'train it with data.train_tokenizer (pad_id=0, unk_id=1, bos_id=2, eos_id=3, '
        f'user_defined_symbols={list(SPECIAL_PIECES)}).'
      )
    self.cls_id, self.sep_id, self.mask_id = (self._sp.piece_to_id(p) for p in SPECIAL_PIECES)
    self._check_special_ids()

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    pieces = self._sp.encode(text, return_type='proto').pieces
    # SentencePiece reports UTF-8 byte offsets: a piece ending at byte b ends after the
    # characters whose bytes all lie before b (0 for the empty leading '▁').
    char_byte_ends = np.cumsum([len(c.encode('utf-8')) for c in text])  # [chars]
    ids = np.asarray([p.id for p in pieces], np.int32)
    ends = np.searchsorted(char_byte_ends, [p.end for p in pieces], side='right')
    return ids, ends.astype(np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) != self.pad_id])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))


def _sample_lines(documents: Sequence[str], max_docs: int, seed: int) -> list[str]:
  n = len(documents)
  if n > max_docs:
    indices = np.sort(np.random.default_rng(seed).choice(n, size=max_docs, replace=False))
  else:
    indices = np.arange(n)
  return [line.strip() for i in indices for line in documents[int(i)].splitlines() if line.strip()]


def train_sentencepiece(
  documents: Sequence[str],
  model_prefix: str,
  vocab_size: int,
  max_docs: int,
  seed: int = 0,
  model_type: str = 'unigram',
) -> str:
  """Trains a SentencePiece model on (a deterministic sample of) `documents`.

  Args:
    documents: Random-access document strings; each line is one sentence.
    model_prefix: Output path without suffix; writes `<model_prefix>.model`.
    vocab_size: Exact vocabulary size, special pieces included.
    max_docs: Documents sampled (without replacement, by `seed`) to train on.
    seed: Seed of the document sample and of SentencePiece's generator.
    model_type: 'unigram', 'bpe', 'char' or 'word'.

  Returns:
    The path of the written .model file (same inputs give the same bytes).
  """
  if model_type not in MODEL_TYPES:
    raise ValueError(f'model_type={model_type!r} must be one of {MODEL_TYPES}.')
  if max_docs < 1:
    raise ValueError(f'data.tokenizer_train_docs={max_docs} must be >= 1.')
  lines = _sample_lines(documents, max_docs, seed)
  if not lines:
    raise ValueError(
      f'No non-empty lines in the {min(len(documents), max_docs)} sampled documents.'
    )
  chars = set()
  for line in lines:
    chars.update(line)
  spm.set_random_generator_seed(seed)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines),
      model_writer=model,
      model_type=model_type,
      vocab_size=vocab_size,
      pad_id=0,
      unk_id=1,
      bos_id=2,
      eos_id=3,
      user_defined_symbols=list(SPECIAL_PIECES),
      # Every character fits when the alphabet is small next to the vocabulary;
      # otherwise rare characters (stray CJK in English text) become [UNK].
      character_coverage=1.0 if len(chars) <= vocab_size // 4 else 0.9995,
      max_sentence_length=1 << 16,
      num_threads=2,
      minloglevel=2,
    )
  except RuntimeError as e:
    if 'Vocabulary size' in str(e):
      raise ValueError(
        f'data.vocab_size={vocab_size} is too large for the {len(lines)} training lines; '
        f'lower data.vocab_size (SentencePiece says: {str(e).split("] ")[-1]})'
      ) from e
    raise
  path = model_prefix + '.model'
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(model.getvalue())
  os.replace(tmp, path)  # Atomic: a reader never sees a half-written model.
  return path


def load_tokenizer(path: str) -> Tokenizer:
  """Loads a SentencePiece `.model` or a WordPiece `*.txt` vocabulary.

  Args:
    path: The model or vocabulary file.

  Returns:
    The tokenizer; WordPiece lowercases unless the vocabulary has uppercase pieces.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Tokenizer file {path!r} does not exist.')
  if path.endswith('.model'):
    return SentencePieceTokenizer(path)
  if path.endswith('.txt'):
    from data.wordpiece import WordPieceTokenizer  # wordpiece imports this module.

    return WordPieceTokenizer(path, lowercase=None)
  raise ValueError(
    f'Tokenizer file {path!r} is neither a SentencePiece .model nor a WordPiece vocab .txt.'
  )


def get_or_train_tokenizer(
  config: config_dict.ConfigDict,
  workdir: str,
  process_index: int = 0,
  barrier: Callable[[], None] | None = None,
) -> Tokenizer:
  """Loads `config.data.tokenizer_path`, or trains (once) into the workdir.

  Args:
    config: The full config (`data.*` and `seed` are read).
    workdir: Run directory; a trained model goes to `<workdir>/tokenizer/spm.model`
      and is reused when it exists, so a resumed run keeps its tokenizer.
    process_index: This process's index; only process 0 trains.
    barrier: Called after training, before every process loads (multi-host).

  Returns:
    The tokenizer.
  """
  if config.data.tokenizer_path:
    return load_tokenizer(config.data.tokenizer_path)
  prefix = os.path.join(workdir, 'tokenizer', 'spm')
  if process_index == 0 and not os.path.exists(prefix + '.model'):
    documents = load_documents(config.data, 'train')
    train_sentencepiece(
      documents, prefix, config.data.vocab_size, config.data.tokenizer_train_docs, config.seed
    )
  if barrier is not None:
    barrier()
  return load_tokenizer(prefix + '.model')
