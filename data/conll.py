"""CoNLL-2003 NER: the 4-column file reader, the label list and sub-token label alignment.

The original format is one token per line, `token POS chunk NER` separated by single spaces;
a blank line ends a sentence and `-DOCSTART- -X- -X- O` lines mark document starts (they
are not sentences). The last sentence may end at the end of the file without a blank line.
Tags are kept as written (the shared copy is IOB2: B- opens every entity).
"""

from collections.abc import Sequence

import numpy as np

from data import text_decoding

Sentence = tuple[list[str], list[str]]  # (tokens, tags), one tag per token

_DOCSTART = '-DOCSTART-'
_COLUMNS = 4
TAG_COLUMNS = {'pos': 1, 'chunk': 2, 'ner': 3}  # The tag sets a file carries, by column.


def read_conll(path: str, tags_of: str = 'ner') -> list[Sentence]:
  """Sentences of a CoNLL-2003 file as (tokens, tags), in file order: the NER tags, or
  (`tags_of`='pos' or 'chunk') the part-of-speech or chunk tags.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: a non-blank line without exactly 4 space-separated columns (the message
      gives file and line number).
  """
  if tags_of not in TAG_COLUMNS:
    raise ValueError(f'tags_of={tags_of!r}; expected one of {sorted(TAG_COLUMNS)}.')
  column = TAG_COLUMNS[tags_of]
  sentences, tokens, tags = [], [], []
  with text_decoding.open_strict(path) as f:
    for line_number, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        if tokens:
          sentences.append((tokens, tags))
        tokens, tags = [], []
        continue
      if fields[0] == _DOCSTART:
        continue
      if len(fields) != _COLUMNS:
        raise ValueError(
          f'{path}:{line_number}: expected 4 columns (token POS chunk NER), '
          f'got {len(fields)}: {line.rstrip()[:80]!r}.'
        )
      tokens.append(fields[0])
      tags.append(fields[column])
  if tokens:  # The last sentence, when the file does not end with a blank line.
    sentences.append((tokens, tags))
  return sentences


def label_list(sentences: list[Sentence]) -> list[str]:
  """Every tag seen, 'O' first (id 0), then the rest sorted: B-LOC, B-MISC, ..., I-PER."""
  seen = {tag for _, tags in sentences for tag in tags}
  return ['O'] + sorted(seen - {'O'})


def first_subtoken_labels(
  word_ids: np.ndarray, tags: list[str], label_to_id: dict[str, int], ignore: int = -100
) -> np.ndarray:
  """Per-sub-token label ids, as in BERT's NER recipe: each word's first sub-token only.

  Args:
    word_ids: [length] int, for each sub-token the index of its word in `tags`, or -1 for
      special tokens ([CLS], [SEP]) and padding.
    tags: the sentence's word-level tags.
    label_to_id: tag -> label id.
    ignore: the id of positions the loss skips (later sub-tokens, specials, padding).

  Returns:
    [length] int32 label ids.
  """
  word_ids = np.asarray(word_ids)
  if word_ids.ndim != 1:
    raise ValueError(f'word_ids must be 1-D [length], got shape {word_ids.shape}.')
  if word_ids.size and word_ids.max() >= len(tags):
    raise ValueError(f'word id {word_ids.max()} is out of range for {len(tags)} tags.')
  unknown = sorted(set(tags) - set(label_to_id))
  if unknown:
    raise ValueError(f'tags {unknown} are not in label_to_id.')
  tag_ids = np.array([label_to_id[tag] for tag in tags] or [ignore], np.int32)  # [words]
  # A sub-token starts a word when its word id differs from the previous sub-token's.
  previous = np.concatenate([[-1], word_ids[:-1]])  # [length]
  first = (word_ids >= 0) & (word_ids != previous)  # [length]
  return np.where(first, tag_ids[np.maximum(word_ids, 0)], ignore).astype(np.int32)


def split_tag(tag: str) -> tuple[str, str]:
  """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
  if tag == 'O':
    return 'O', ''
  prefix, _, kind = tag.partition('-')
  if prefix not in ('B', 'I') or not kind:
    raise ValueError(f'expected a BIO tag (O, B-TYPE or I-TYPE), got {tag!r}')
  return prefix, kind


def entity_chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """The entity chunks of one sentence's BIO tags, by conlleval's chunk rules.

  A chunk starts at a B- tag, and also at an I- tag that follows O or a tag of another type
  (conlleval reads such an I- as a start, as in IOB1). It ends before a B- or O tag, before a
  tag of another type, and at the end of the sentence.

  Args:
    tags: e.g. ['B-PER', 'I-PER', 'O', 'I-LOC'].

  Returns:
    {(type, start, end)} with end exclusive, e.g. {('PER', 0, 2), ('LOC', 3, 4)}.
  """
  entities = set()
  start = kind = None  # The open chunk, if any.
  for position, tag in enumerate(tags):
    prefix, tag_kind = split_tag(tag)
    # An I- of the open chunk's type continues it; everything else closes it.
    if start is not None and not (prefix == 'I' and tag_kind == kind):
      entities.add((kind, start, position))
      start = kind = None
    if prefix != 'O' and start is None:
      start, kind = position, tag_kind
  if start is not None:
    entities.add((kind, start, len(tags)))
  return entities
