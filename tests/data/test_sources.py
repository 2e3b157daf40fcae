"""Tests of data/sources.py: embedded corpus, text files, TFDS, held-out splits."""

import math
from pydoc_data.topics import topics

import numpy as np
import pytest

from configs import base
from data import sources


def _data_config(**overrides):
  config = base.get_config().data
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def _write(path, text):
  path.write_text(text, encoding='utf-8')
  return str(path)


def test_embedded_corpus_is_real_and_big():
  train = sources.load_documents(_data_config(), 'train')
  evals = sources.load_documents(_data_config(), 'eval')
  docs = list(train) + list(evals)
  assert len(docs) == len(topics) > 70
  assert sum(len(d) for d in docs) > 300_000
  assert any('The "assert" statement' in d for d in docs)
  assert all(isinstance(d, str) and d for d in docs)


def test_embedded_train_eval_disjoint_deterministic_and_complete():
  config = _data_config(eval_fraction=0.05)
  train = list(sources.load_documents(config, 'train'))
  evals = list(sources.load_documents(config, 'eval'))
  assert len(evals) == math.ceil(len(topics) / 20)
  assert not set(train) & set(evals)
  assert sorted(train + evals) == sorted(topics.values())
  # Sorted-key order, eval = every 20th document starting at the first.
  ordered = [topics[k] for k in sorted(topics)]
  assert evals == ordered[::20]
  assert train == [d for i, d in enumerate(ordered) if i % 20]
  assert train == list(sources.load_documents(config, 'train'))


@pytest.mark.parametrize('n, every', [(23, 5), (20, 5), (3, 2), (1, 7), (7, 20)])
def test_held_out_split_index_mapping(n, every):
  docs = [str(i) for i in range(n)]
  evals = sources.HeldOutSplit(docs, every, held_out=True)
  train = sources.HeldOutSplit(docs, every, held_out=False)
  assert list(evals) == [str(i) for i in range(0, n, every)]
  assert list(train) == [str(i) for i in range(n) if i % every]
  assert len(evals) + len(train) == n
  assert evals[-1] == docs[(n - 1) // every * every]
  with pytest.raises(IndexError):
    evals[len(evals)]


@pytest.mark.parametrize('fraction', [0.0, -0.1, 0.6, 1.0])
def test_bad_eval_fraction(fraction):
  with pytest.raises(ValueError, match=r'eval_fraction=.*\(0, 0\.5\]'):
    sources.load_documents(_data_config(eval_fraction=fraction), 'train')


def test_text_files_blank_line_documents_and_globs(tmp_path):
  _write(tmp_path / 'b.txt', 'Third doc.\n\n\n   \nFourth doc, line 1.\n  Fourth doc, line 2.  \n')
  _write(tmp_path / 'a.txt', '\n\nFirst doc line 1.\nFirst doc line 2.\n\nSecond doc.')
  held = _write(tmp_path / 'held.eval', 'Eval doc.\n\n\nOther eval doc.\n\n')
  config = _data_config(source='text', text_files=str(tmp_path / '*.txt'), eval_text_files=held)
  train = sources.load_documents(config, 'train')
  assert list(train) == [
    'First doc line 1.\nFirst doc line 2.',
    'Second doc.',
    'Third doc.',
    'Fourth doc, line 1.\nFourth doc, line 2.',
  ]
  assert list(sources.load_documents(config, 'eval')) == ['Eval doc.', 'Other eval doc.']
  # Comma-separated globs keep the given order; each glob is sorted.
  config.text_files = f'{tmp_path}/b.txt, {tmp_path}/a*'
  assert sources.load_documents(config, 'train')[0] == 'Third doc.'


def test_text_files_hold_out_by_fraction(tmp_path):
  path = _write(tmp_path / 'c.txt', '\n\n'.join(f'doc {i}' for i in range(10)))
  config = _data_config(source='text', text_files=path, eval_fraction=0.25)
  assert list(sources.load_documents(config, 'eval')) == ['doc 0', 'doc 4', 'doc 8']
  train = sources.load_documents(config, 'train')
  assert list(train) == ['doc 1', 'doc 2', 'doc 3', 'doc 5', 'doc 6', 'doc 7', 'doc 9']


def test_missing_glob_names_it(tmp_path):
  _write(tmp_path / 'a.txt', 'doc')
  missing = str(tmp_path / 'nope' / '*.txt')
  config = _data_config(source='text', text_files=f'{tmp_path}/a.txt,{missing}')
  with pytest.raises(FileNotFoundError, match=r"text_files: the glob '.*nope/\*\.txt' matches no"):
    sources.load_documents(config, 'train')
  with pytest.raises(ValueError, match='text_files is empty'):
    sources.load_documents(_data_config(source='text'), 'train')


def test_empty_corpus(tmp_path):
  path = _write(tmp_path / 'empty.txt', '\n   \n\t\n')
  with pytest.raises(ValueError, match='no non-empty documents'):
    sources.load_documents(_data_config(source='text', text_files=path), 'train')
  one = _write(tmp_path / 'one.txt', 'only doc')
  with pytest.raises(ValueError, match='at least 2'):
    sources.load_documents(_data_config(source='text', text_files=one), 'eval')


def test_unknown_source_and_split():
  with pytest.raises(ValueError, match=r"data.source='wiki' is unknown.*'embedded'"):
    sources.load_documents(_data_config(source='wiki'), 'train')
  with pytest.raises(ValueError, match=r"split='test' must be one of"):
    sources.load_documents(_data_config(), 'test')


def test_tfds_requires_name():
  with pytest.raises(ValueError, match='tfds_name is empty'):
    sources.load_documents(_data_config(source='tfds'), 'train')


def test_tfds_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  config = _data_config(source='tfds', tfds_name='lm1b', tfds_eval_split='test')
  with tfds.testing.mock_data(num_examples=7):
    train = sources.load_documents(config, 'train')
    assert len(train) == 7
    docs = [train[i] for i in range(7)]
    assert all(isinstance(d, str) and d for d in docs)
    assert list(train) == docs
    assert len(sources.load_documents(config, 'eval')) == 7
    # No eval split: hold out every 5th training document.
    config.tfds_eval_split = ''
    config.eval_fraction = 0.2
    assert list(sources.load_documents(config, 'eval')) == [docs[0], docs[5]]
    assert len(sources.load_documents(config, 'train')) == 5
    config.text_key = 'body'
    with pytest.raises(ValueError, match=r"text_key='body'.*'lm1b'.*\['text'\]"):
      sources.load_documents(config, 'train')


def test_tfds_tfrecord_dataset_gets_clear_error(monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')

  def data_source(*args, **kwargs):
    raise NotImplementedError('Random access data source for file format tfrecord')

  monkeypatch.setattr(tfds, 'data_source', data_source)
  config = _data_config(source='tfds', tfds_name='c4/en')
  with pytest.raises(ValueError, match='tfds build c4/en --file_format=array_record'):
    sources.load_documents(config, 'train')


class _BatchedSource(list):
  def __getitems__(self, keys):
    return [self[k] for k in keys]


def test_tfds_texts_decodes_bytes():
  source = [{'text': b'caf\xc3\xa9'}, {'text': np.array(b'two', dtype=object)}, {'text': 'three'}]
  texts = sources.TfdsTexts(source, 'text', 'fake')
  assert list(texts) == ['café', 'two', 'three']
  assert texts[-1] == 'three'
  with pytest.raises(IndexError):
    texts[3]
  batched = sources.TfdsTexts(_BatchedSource(source), 'text', 'fake')
  assert batched.__getitems__([2, 0]) == ['three', 'café']
  with pytest.raises(ValueError, match=r"\['text'\]"):
    sources.TfdsTexts(source, 'content', 'fake')
