"""SentencePiece models, and finding, loading or training a run's tokenizer.

The interface is data/tokenizer_api.py; WordPiece vocabularies are data/wordpiece.py.
A SentencePiece model trained here has pad=0, unk=1, bos=2, eos=3 and [CLS], [SEP],
[MASK] as user-defined symbols 4, 5, 6.
"""

import io
import os
from collections.abc import Callable, Sequence

import numpy as np
import sentencepiece as spm
from ml_collections import config_dict

from data.sources import load_documents
from data.tokenizer_api import Tokenizer
from data.wordpiece import WordPieceTokenizer

SPECIAL_PIECES = ('[CLS]', '[SEP]', '[MASK]')
MODEL_TYPES = ('unigram', 'bpe', 'char', 'word')


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
        'train it with tools.train_tokenizer (pad_id=0, unk_id=1, bos_id=2, eos_id=3, '
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
