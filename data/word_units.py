"""Whole-word units of packed token rows, from the tokenizer's pieces (no text needed).

A [vocab] boolean table "this piece starts a word" is computed once from the
pieces: WordPiece pieces that do not start with '##', SentencePiece pieces that
start with '▁'. Special tokens ([CLS], [SEP], [UNK], ...) and padding are units
of their own and never candidates, and a word never crosses a segment or a
special token. Word ids per row are then a cumulative sum of the start flags.

Chinese (Chinese-BERT-wwm): the tokenizer splits ideographs into one token per
character, so every character would be a word. `chinese_word_starts` turns a
segmentation of the characters (jieba, or the lengths of the words of a
user-supplied segmentation) into per-token start flags; the objective uses them
either from the batch (`batch['word_starts']`, when the loader supplies a
pre-segmented corpus) or by running jieba on each packed segment's characters.
"""

from collections.abc import Callable, Sequence

import numpy as np

SCHEMES = ('wordpiece', 'sentencepiece')


def _pieces(tokenizer) -> list[str]:
  return [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]


def word_start_table(tokenizer, scheme: str | None = None) -> np.ndarray:
  """[vocab] bool: whether a token of this id begins a new word.

  Args:
    tokenizer: anything with `vocab_size`, `id_to_piece` and `special_ids`.
    scheme: 'wordpiece' ('##' marks a continuation) or 'sentencepiece' ('▁'
      marks a start); None infers it: SentencePiece if any piece starts with '▁'.

  Returns:
    The table; special ids are True (each is a unit of its own).
  """
  pieces = _pieces(tokenizer)
  if scheme is None:
    scheme = 'sentencepiece' if any(p.startswith('▁') for p in pieces) else 'wordpiece'
  if scheme not in SCHEMES:
    raise ValueError(f'word scheme {scheme!r} must be one of {SCHEMES}.')
  if scheme == 'wordpiece':
    table = np.array([not p.startswith('##') for p in pieces], bool)
  else:
    table = np.array([p.startswith('▁') for p in pieces], bool)
  table[np.asarray(tokenizer.special_ids)] = True
  return table


def token_word_starts(
  tokens: np.ndarray, segment_ids: np.ndarray, starts_table: np.ndarray, special_ids: np.ndarray
) -> np.ndarray:
  """[batch, length] bool: the token begins a unit (a word, a special token or padding).

  A token also begins a word after a special token or a segment change, so a
  word never spans two documents or a row start.
  """
  special = np.isin(tokens, special_ids)  # [batch, length]
  starts = starts_table[tokens] | special
  boundary = np.ones_like(starts)
  boundary[:, 1:] = (segment_ids[:, 1:] != segment_ids[:, :-1]) | special[:, :-1]
  return starts | boundary


def word_ids(starts: np.ndarray) -> np.ndarray:
  """[batch, length] int: index of each token's unit within its row (0, 1, ...)."""
  return np.cumsum(starts, axis=1) - 1


def word_start_positions(starts: np.ndarray) -> np.ndarray:
  """[batch, length] int: position of the first token of each token's unit."""
  positions = np.where(starts, np.arange(starts.shape[1])[None], 0)
  return np.maximum.accumulate(positions, axis=1)


def jieba_segmenter() -> Callable[[str], list[str]]:
  """jieba's default (accurate-mode) segmenter, loaded once; quiet."""
  import logging

  import jieba

  jieba.setLogLevel(logging.WARNING)
  return lambda text: list(jieba.cut(text, HMM=True))


def chinese_word_starts(
  chars: Sequence[str], segmenter: Callable[[str], list[str]] | Sequence[int]
) -> np.ndarray:
  """Per-token word-start flags from a word segmentation of the tokens' characters.

  Args:
    chars: the text of each token, in order (one CJK character per token for a
      Chinese BERT vocabulary; longer pieces such as Latin words are allowed).
    segmenter: a function text -> words (e.g. `jieba_segmenter()`), or the
      lengths, in characters, of the words of a user-supplied segmentation of
      `''.join(chars)`.

  Returns:
    [len(chars)] bool: a token starts a word when a word of the segmentation
    starts at its first character. A word boundary inside a token is ignored.
  """
  text = ''.join(chars)
  if callable(segmenter):
    lengths = [len(w) for w in segmenter(text)]
  else:
    lengths = [int(n) for n in segmenter]
  if sum(lengths) != len(text) or min(lengths, default=1) < 1:
    raise ValueError(
      f'The segmentation covers {sum(lengths)} characters in words of lengths >= 1; '
      f'the tokens hold {len(text)}.'
    )
  word_offsets = np.cumsum([0] + lengths[:-1])
  token_offsets = np.cumsum([0] + [len(c) for c in chars[:-1]])[: len(chars)]
  return np.isin(token_offsets, word_offsets)


def chinese_starts_for_batch(
  tokens: np.ndarray,
  segment_ids: np.ndarray,
  starts: np.ndarray,
  tokenizer,
  segmenter: Callable[[str], list[str]],
) -> np.ndarray:
  """Refines `starts` [batch, length] with a segmenter over each packed segment's characters.

  Only single-character CJK tokens are refined: a character that does not begin a
  word of the segmentation becomes a continuation, as Chinese-BERT-wwm's
  reference files do. The segmenter runs once per packed segment (jieba is a
  Python library; a pre-segmented corpus avoids this with `batch['word_starts']`).
  """
  pieces = _cjk_pieces(tokenizer)
  out = starts.copy()
  for row in range(tokens.shape[0]):
    for s in np.unique(segment_ids[row][segment_ids[row] > 0]):
      positions = np.flatnonzero(segment_ids[row] == s)
      ids = tokens[row, positions]
      chars = [pieces.get(int(i), '\x00') for i in ids]  # '\x00': a non-CJK token.
      flags = chinese_word_starts(chars, segmenter)
      is_cjk = np.array([int(i) in pieces for i in ids], bool)
      out[row, positions[is_cjk]] &= flags[is_cjk]
      # A CJK character after a non-CJK token always starts a word.
      after_other = np.r_[True, ~is_cjk[:-1]] & is_cjk
      out[row, positions[after_other]] = True
  return out


def segmenter(objective_cfg):
  """jieba's segmenter when `objective.word_segmenter == 'jieba'` (Chinese words over
  character pieces), None for '' (words from the pieces alone)."""
  name = objective_cfg.word_segmenter
  if name not in ('', 'jieba'):
    raise ValueError(f"objective.word_segmenter={name!r} must be '' or 'jieba'.")
  return jieba_segmenter() if name == 'jieba' else None


def make_word_starts(objective_cfg, tokenizer):
  """Returns `starts(batch) -> [batch, length] bool`: the tokens that begin a word.

  Words come from the pieces (WordPiece '##', SentencePiece '▁'); from
  `batch['word_starts']` when the loader supplies them (a pre-segmented corpus);
  Chinese words from jieba with `objective.word_segmenter='jieba'`. Special
  tokens, padding and segment changes always start a unit.
  """
  chinese = segmenter(objective_cfg)
  special_ids = np.asarray(tokenizer.special_ids)
  table = word_start_table(tokenizer)

  def starts(batch: dict) -> np.ndarray:
    tokens, segment_ids = batch['tokens'], batch['segment_ids']  # [batch, length]
    if 'word_starts' in batch:  # Supplied starts replace the pieces'.
      flags = token_word_starts(tokens, segment_ids, np.zeros_like(table), special_ids)
      return flags | np.asarray(batch['word_starts'], bool)
    flags = token_word_starts(tokens, segment_ids, table, special_ids)
    if chinese is not None:
      flags = chinese_starts_for_batch(tokens, segment_ids, flags, tokenizer, chinese)
    return flags

  return starts


def span_unit_starts(
  ids: np.ndarray, ends: np.ndarray, spans, starts_table: np.ndarray
) -> np.ndarray:
  """[n] bool: where a unit begins in one tokenized document, annotated spans as units.

  Args:
    ids: [n] token ids of the document.
    ends: [n] character index just past each token (Tokenizer.encode_with_offsets).
    spans: (start, end) character ranges (an entity, a phrase, a word); a token
      belongs to the span holding its last character.
    starts_table: word_start_table(tokenizer): outside spans, words are units.

  Returns:
    True at every word start outside the spans, at each span's first token and at
    the token after it; False inside a span (so the span is one whole unit).
  """
  flags = np.asarray(starts_table, bool)[ids].copy()
  last_char = np.asarray(ends, np.int64) - 1
  for start, end in spans:
    inside = np.flatnonzero((last_char >= start) & (last_char < end))
    if inside.size:
      flags[inside] = False
      flags[inside[0]] = True
      if inside[-1] + 1 < len(flags):
        flags[inside[-1] + 1] = True
  return flags


def _cjk_pieces(tokenizer) -> dict[int, str]:
  """{id: character} of the single-CJK-character pieces of the vocabulary."""
  cache = getattr(tokenizer, '_wwm_cjk_pieces', None)
  if cache is None:
    cache = {}
    for i, piece in enumerate(_pieces(tokenizer)):
      if len(piece) == 1 and _is_cjk(ord(piece)):
        cache[i] = piece
    try:
      tokenizer._wwm_cjk_pieces = cache
    except AttributeError:
      pass
  return cache


def _is_cjk(cp: int) -> bool:
  return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF
