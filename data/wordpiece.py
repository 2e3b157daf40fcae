"""BERT WordPiece tokenization from a `vocab.txt` (one piece per line, id = line).

Two stages, as in BERT's release:

1. Basic tokenization: drop NUL, U+FFFD and control characters; map whitespace
   to spaces; put spaces around CJK ideographs; split on whitespace; when
   lowercasing, lowercase and strip accents (NFD, drop combining marks); split
   off every punctuation character as its own token.
2. WordPiece: greedy longest-match-first over each token, continuation pieces
   prefixed with '##'. A token longer than 100 characters, or one that cannot
   be covered by vocabulary pieces, becomes a single [UNK].
"""

import functools
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from data import atomic_files, text_decoding
from data.tokenizer_api import Tokenizer

MAX_CHARS_PER_WORD = 100
SPECIAL_TOKENS = {
  'pad_id': '[PAD]',
  'unk_id': '[UNK]',
  'cls_id': '[CLS]',
  'sep_id': '[SEP]',
  'mask_id': '[MASK]',
}
# ASCII fast path of the cleaning step: tab/newline/return -> space, other
# control characters (category Cc) removed.
_ASCII_CLEAN = {cp: None for cp in [*range(32), 127] if chr(cp) not in '\t\n\r'}
_ASCII_CLEAN.update({ord(c): ' ' for c in '\t\n\r'})
# CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana, which are
# written with spaces and tokenized like other scripts).
CJK_RANGES = (
  (0x4E00, 0x9FFF),
  (0x3400, 0x4DBF),
  (0x20000, 0x2A6DF),
  (0x2A700, 0x2B73F),
  (0x2B740, 0x2B81F),
  (0x2B820, 0x2CEAF),
  (0xF900, 0xFAFF),
  (0x2F800, 0x2FA1F),
)


def _is_cjk(cp: int) -> bool:
  return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def _is_whitespace(ch: str) -> bool:
  return ch in ' \t\n\r' or unicodedata.category(ch) == 'Zs'


def _is_control(ch: str) -> bool:
  return ch not in '\t\n\r' and unicodedata.category(ch).startswith('C')


def _is_punctuation(ch: str) -> bool:
  # All non-alphanumeric printable ASCII counts ('$', '^', '`' are not Unicode 'P').
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith('P')


def _clean(text: str) -> str:
  if text.isascii():
    return text.translate(_ASCII_CLEAN)
  out = []
  for ch in text:
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or _is_control(ch):
      continue
    if _is_whitespace(ch):
      out.append(' ')
    elif _is_cjk(cp):
      out.append(f' {ch} ')
    else:
      out.append(ch)
  return ''.join(out)


def _split_punctuation(word: str) -> list[str]:
  tokens, current = [], []
  for ch in word:
    if _is_punctuation(ch):
      if current:
        tokens.append(''.join(current))
        current = []
      tokens.append(ch)
    else:
      current.append(ch)
  if current:
    tokens.append(''.join(current))
  return tokens


def _strip_case(token: str) -> str:
  """`token` as an uncased vocabulary sees it (lowercase and strip accents)."""
  token = unicodedata.normalize('NFD', token.lower())
  return ''.join(ch for ch in token if unicodedata.category(ch) != 'Mn')


class WordPieceTokenizer(Tokenizer):
  """BERT's tokenizer: basic tokenization, then greedy longest-match WordPiece."""

  def __init__(self, vocab_path: str, lowercase: bool | None = True):
    """Loads the vocabulary.

    Args:
      vocab_path: BERT `vocab.txt`; must hold [PAD], [UNK], [CLS], [SEP], [MASK].
      lowercase: Lowercase and strip accents (uncased models). None infers it:
        lowercase unless lowercasing would change a piece (brackets aside).
    """
    with open(vocab_path, 'rb') as f:
      vocab_bytes = f.read()
    super().__init__(vocab_path, vocab_bytes)
    vocab_text = text_decoding.decode_bytes(vocab_bytes, vocab_path)
    self._pieces = [line.rstrip('\r') for line in vocab_text.split('\n')]
    if self._pieces and not self._pieces[-1]:
      self._pieces.pop()  # The trailing newline ends the last line; it is not a piece.
    self._ids = {}
    for i, piece in enumerate(self._pieces):
      self._ids.setdefault(piece, i)
    self.vocab_size = len(self._pieces)
    missing = [t for t in SPECIAL_TOKENS.values() if t not in self._ids]
    if missing:
      raise ValueError(f'WordPiece vocab {vocab_path} lacks the special tokens {missing}.')
    for name, token in SPECIAL_TOKENS.items():
      setattr(self, name, self._ids[token])
    self.bos_id, self.eos_id = self.cls_id, self.sep_id  # BERT has no separate BOS/EOS.
    if lowercase is None:  # An uncased vocab was built from lowercased text.
      lowercase = all(p == p.lower() for p in self._pieces if not p.startswith('['))
    self.lowercase = lowercase
    self._check_special_ids()
    # Real text repeats words, so whole-word results are cached per instance.
    self._word_ids = functools.lru_cache(maxsize=1 << 16)(self._word_to_ids)

  def basic_tokenize(self, text: str) -> list[str]:
    """Returns BERT's basic tokens of `text` (before WordPiece)."""
    tokens = []
    for word in _clean(text).split():
      tokens.extend(self._basic_word(word))
    return tokens

  def _basic_word(self, word: str) -> list[str]:
    if self.lowercase:
      word = _strip_case(word)
    return _split_punctuation(word)

  def _wordpiece(self, token: str) -> list[int]:
    if len(token) > MAX_CHARS_PER_WORD:
      return [self.unk_id]
    ids, start = [], 0
    while start < len(token):
      for end in range(len(token), start, -1):
        piece = token[start:end] if start == 0 else '##' + token[start:end]
        if piece in self._ids:
          ids.append(self._ids[piece])
          start = end
          break
      else:  # No piece matches at `start`: the whole token is unknown.
        return [self.unk_id]
    return ids

  def _word_to_ids(self, word: str) -> tuple[int, ...]:
    return tuple(i for token in self._basic_word(word) for i in self._wordpiece(token))

  def encode(self, text: str) -> np.ndarray:
    ids = [i for word in _clean(text).split() for i in self._word_ids(word)]
    return np.asarray(ids, np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    pieces = [self._pieces[int(i)] for i in ids if int(i) != self.pad_id]
    return ' '.join(pieces).replace(' ##', '')

  def id_to_piece(self, i: int) -> str:
    return self._pieces[int(i)]


def character_pieces(texts: Iterable[str]) -> list[str]:
  """A character-level vocabulary for `texts`: the special tokens, then each character
  that opens a basic token as a piece and each that continues one as '##' + character, in
  order of first appearance (so the same texts give the same ids). With it
  WordPieceTokenizer(lowercase=None) encodes every one of `texts` without [UNK]: a CJK
  ideograph (a basic token of its own) is one piece, any other token one piece per
  character. The vocabulary a model trained from scratch needs when no checkpoint's is at
  hand (MSRA's characters, bench/ner_mrc.py)."""
  seen = dict.fromkeys(SPECIAL_TOKENS.values())
  tokens = [t for text in texts for word in _clean(text).split() for t in _split_punctuation(word)]
  # The tokenizer lowercases (and strips accents) when no piece has a capital: add those forms.
  cased = any(t != t.lower() for t in tokens)
  for token in tokens:
    for form in (token,) if cased else (token, _strip_case(token)):
      for i, ch in enumerate(form):
        seen.setdefault(ch if i == 0 else f'##{ch}')
  return list(seen)


def write_vocab(pieces: Sequence[str], path: str) -> str:
  """Writes `pieces` as a BERT vocab.txt (one per line, id = line) at `path`, atomically
  (a reader never sees half a file); returns `path`."""
  if len(set(pieces)) != len(pieces) or any(not p or '\n' in p or p != p.strip() for p in pieces):
    raise ValueError('Vocabulary pieces must be distinct, non-empty, one line each, unpadded.')
  atomic_files.write_text(path, ''.join(f'{p}\n' for p in pieces))
  return path
