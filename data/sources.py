"""Document sources: the embedded pydoc corpus, local text or JSONL files and TFDS.

`load_documents(config.data, split)` returns a random-access sequence of
document strings in a deterministic order. Held-out evaluation documents, when
the source has no evaluation split of its own, are every k-th document with
k = round(1 / eval_fraction); training gets the rest. Both are index views, so
nothing large is copied.

JSONL files (`source='jsonl'`) hold one document per line (data/jsonl.py), optionally
with annotated character spans; OCR-JSON files (`source='ocr_json'`) one page per line,
its words with their boxes (data/layout.py). Invalid UTF-8 in a text or JSONL file is an error naming
the file and byte, or, with `data.on_decode_error='replace'`, U+FFFD counted in the log
(data/text_decoding.py).

TensorFlow Datasets is imported only for `source='tfds'`, so the model and
training path imports without TensorFlow.
"""

import collections.abc
import glob
import os
from collections.abc import Sequence

from ml_collections import config_dict

from data import episodes, jsonl, layout, tasks, text_decoding

SOURCES = ('embedded', 'text', 'jsonl', 'ocr_json', 'tfds', *tasks.SOURCES)
SPLITS = ('train', 'eval')


class HeldOutSplit(collections.abc.Sequence):
  """The train or eval part of a document sequence: eval is every k-th document.

  Eval holds indices 0, k, 2k, ...; train holds the others, in order. Indices
  are mapped on access, so the underlying documents are never copied.
  """

  def __init__(self, documents: Sequence[str], every: int, held_out: bool):
    if every < 2:
      raise ValueError(f'HeldOutSplit needs every >= 2, got {every}.')
    self._documents = documents
    self._every = every
    self._held_out = held_out
    n = len(documents)
    num_eval = -(-n // every)  # ceil(n / every)
    self._len = num_eval if held_out else n - num_eval

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> str:
    if not -self._len <= index < self._len:
      raise IndexError(f'document index {index} out of range for {self._len} documents')
    index %= self._len
    if self._held_out:
      return self._documents[index * self._every]
    block, offset = divmod(index, self._every - 1)
    return self._documents[block * self._every + 1 + offset]


class TfdsTexts(collections.abc.Sequence):
  """A TFDS random-access data source seen as a sequence of document strings."""

  def __init__(self, source: Sequence, text_key: str, name: str):
    features = getattr(getattr(source, 'dataset_info', None), 'features', None)
    keys = sorted(features.keys()) if features is not None else sorted(source[0].keys())
    if text_key not in keys:
      raise ValueError(
        f'data.text_key={text_key!r} is not a feature of TFDS dataset {name!r}; '
        f'its features are {keys}.'
      )
    self._source = source
    self._text_key = text_key

  def __len__(self) -> int:
    return len(self._source)

  def _decode(self, example) -> str:
    text = example[self._text_key]
    if hasattr(text, 'item'):  # A NumPy scalar or 0-d array.
      text = text.item()
    return text.decode('utf-8') if isinstance(text, bytes) else str(text)

  def __getitem__(self, index: int) -> str:
    n = len(self._source)
    if not -n <= index < n:
      raise IndexError(f'document index {index} out of range for {n} documents')
    return self._decode(self._source[index % n])

  def __getitems__(self, indices: Sequence[int]) -> list[str]:
    """Batched read (ArrayRecord reads many records at once much faster)."""
    if hasattr(self._source, '__getitems__'):
      return [self._decode(ex) for ex in self._source.__getitems__(list(indices))]
    return [self[i] for i in indices]


def _holdout_every(eval_fraction: float) -> int:
  if not 0.0 < eval_fraction <= 0.5:
    raise ValueError(
      f'data.eval_fraction={eval_fraction!r} must be in (0, 0.5], e.g. 0.05 holds out '
      'every 20th document for evaluation.'
    )
  return round(1.0 / eval_fraction)


def _hold_out(documents: Sequence[str], split: str, eval_fraction: float, what: str):
  every = _holdout_every(eval_fraction)
  if len(documents) < 2:
    raise ValueError(
      f'{what} has {len(documents)} document(s); holding out eval documents by '
      'data.eval_fraction needs at least 2 (or give a separate eval split / eval_text_files).'
    )
  return HeldOutSplit(documents, every, held_out=split == 'eval')


def _embedded_documents() -> list[str]:
  from pydoc_data.topics import topics  # Standard library: ~460 KB of real docs, offline.

  return [topics[key] for key in sorted(topics)]


def _expand_globs(patterns: str, key: str) -> list[str]:
  globs = [p.strip() for p in patterns.split(',') if p.strip()]
  if not globs:
    raise ValueError(f'data.{key} is empty; give comma-separated globs of text files.')
  paths = []
  for pattern in globs:
    matches = [m for m in sorted(glob.glob(os.path.expanduser(pattern))) if os.path.isfile(m)]
    if not matches:
      raise FileNotFoundError(f'data.{key}: the glob {pattern!r} matches no files.')
    paths.extend(matches)
  return paths


def read_text_documents(paths: Sequence[str], on_decode_error: str = 'strict') -> list[str]:
  """Reads documents in BERT's pretraining-data format.

  Args:
    paths: UTF-8 text files, one sentence (or paragraph) per line; documents are
      separated by one or more blank lines, and a file's end ends a document.
    on_decode_error: `data.on_decode_error`: 'strict' (invalid UTF-8 is a ValueError
      naming the file and byte) or 'replace' (U+FFFD, the count logged as a warning).

  Returns:
    The non-empty documents, lines stripped and joined with '\\n', in file order.
  """
  text_decoding.check_mode(on_decode_error)
  report = text_decoding.DecodeReport()
  documents = []
  for path in paths:
    lines = []
    for line in text_decoding.text_lines(path, on_decode_error, report):
      line = line.strip()
      if line:
        lines.append(line)
      elif lines:
        documents.append('\n'.join(lines))
        lines = []
    if lines:
      documents.append('\n'.join(lines))
  report.log(len(paths))
  return documents


def _text_documents(patterns: str, key: str, on_decode_error: str) -> list[str]:
  documents = read_text_documents(_expand_globs(patterns, key), on_decode_error)
  if not documents:
    raise ValueError(f'data.{key}={patterns!r} holds no non-empty documents.')
  return documents


def _tfds_documents(data_config: config_dict.ConfigDict, split: str) -> Sequence[str]:
  name = data_config.tfds_name
  if not name:
    raise ValueError(
      "data.tfds_name is empty but data.source='tfds'; set it, e.g. "
      "--config.data.tfds_name='wikipedia/20230601.en'."
    )
  import tensorflow_datasets as tfds  # Here only: keeps TensorFlow off the model path.

  from data import pydoc_topics  # noqa: F401  Registers the embedded corpus as 'pydoc_topics'.

  eval_split = data_config.tfds_eval_split
  tfds_split = eval_split if split == 'eval' and eval_split else data_config.tfds_split
  try:
    source = tfds.data_source(name, split=tfds_split, data_dir=data_config.tfds_data_dir or None)
  except NotImplementedError as e:
    raise ValueError(
      f'TFDS dataset {name!r} was prepared without random access (tfrecord); re-prepare it '
      f"with file_format='array_record': tfds build {name} --file_format=array_record"
      f'{" --data_dir=" + data_config.tfds_data_dir if data_config.tfds_data_dir else ""}'
    ) from e
  documents = TfdsTexts(source, data_config.text_key, name)
  if not len(documents):
    raise ValueError(f'TFDS dataset {name!r} split {tfds_split!r} has no examples.')
  if eval_split:
    return documents
  return _hold_out(documents, split, data_config.eval_fraction, f'TFDS split {tfds_split!r}')


def load_documents(data_config: config_dict.ConfigDict, split: str) -> Sequence[str]:
  """Loads the documents of one split.

  Args:
    data_config: `config.data` (see configs/base.py): `source` and its keys.
    split: 'train' or 'eval'.

  Returns:
    A random-access sequence (`len`, `[int]`) of document strings, in a
    deterministic order; train and eval never share a document.
  """
  if split not in SPLITS:
    raise ValueError(f'split={split!r} must be one of {SPLITS}.')
  source = data_config.source
  if source == 'embedded':
    return _hold_out(_embedded_documents(), split, data_config.eval_fraction, 'embedded corpus')
  if source == 'text':
    decode = data_config.on_decode_error
    if split == 'eval' and data_config.eval_text_files:
      return _text_documents(data_config.eval_text_files, 'eval_text_files', decode)
    documents = _text_documents(data_config.text_files, 'text_files', decode)
    if data_config.eval_text_files:
      return documents
    return _hold_out(documents, split, data_config.eval_fraction, 'data.text_files')
  if source in ('jsonl', 'ocr_json'):
    if source == 'jsonl':
      read = lambda key: jsonl.read_jsonl_documents(  # noqa: E731
        _expand_globs(data_config[key], key),
        data_config.text_key,
        data_config.span_fields,
        data_config.on_decode_error,
      )
    else:  # Pages with word boxes (LayoutLM), data/layout.py.
      read = lambda key: layout.read_ocr_documents(  # noqa: E731
        _expand_globs(data_config[key], key), data_config.on_decode_error
      )
    if split == 'eval' and data_config.eval_text_files:
      return read('eval_text_files')
    documents = read('text_files')
    if not documents:
      raise ValueError(f'data.text_files={data_config.text_files!r} holds no non-empty documents.')
    if data_config.eval_text_files:
      return documents
    return _hold_out(documents, split, data_config.eval_fraction, 'data.text_files')
  if source == 'tfds':
    return _tfds_documents(data_config, split)
  if source in tasks.SOURCES:  # Fine-tuning: one record per example, not document strings.
    records = tasks.load_examples(data_config, split)
    if data_config.episodes.ways:  # Meta-learning: N-way K-shot episodes of the records.
      return episodes.episodes(records, data_config.episodes, split)
    return records
  raise ValueError(f'data.source={source!r} is unknown; use one of {SOURCES}.')
