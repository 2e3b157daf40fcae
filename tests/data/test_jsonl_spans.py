"""JSONL documents with annotated spans: parsing, token offsets, and unit starts in the rows
that ERNIE's entity / phrase masking reads."""

import json

import numpy as np
import pytest

from configs import base
from data import jsonl, sources, tokenizers, word_units
from data.loader import Loader, ShardSpec
from objectives import ernie
from tests.objective_config import objective_config

ENTITIES = ['Guido van Rossum', 'Python Software Foundation', 'Amsterdam']


@pytest.fixture(scope='module')
def spm_path(tmp_path_factory) -> str:
  docs = sources.load_documents(base.get_config().data, 'train')
  prefix = str(tmp_path_factory.mktemp('spm') / 'spm')
  return tokenizers.train_sentencepiece(docs, prefix, 1000, 200)


def _records(n=60):
  """Sentences with their entity spans computed from the text."""
  out = []
  for i in range(n):
    a, b = ENTITIES[i % 3], ENTITIES[(i + 1) % 3]
    text = f'In {1990 + i} {a} met the people of {b} and wrote a long letter about it.'
    spans = [[text.index(e), text.index(e) + len(e)] for e in (a, b)]
    out.append({'text': text, 'entities': spans, 'id': i})
  return out


def _write(tmp_path, records, name='docs.jsonl'):
  path = tmp_path / name
  path.write_text('\n'.join(json.dumps(r) for r in records) + '\n', encoding='utf-8')
  return str(path)


def test_read_jsonl_keeps_the_spans_and_names_bad_lines(tmp_path):
  path = _write(tmp_path, _records(3))
  docs = jsonl.read_jsonl_documents([path], 'text', 'entity_starts:entities')
  assert len(docs) == 3 and isinstance(docs[0], str)
  start, end = docs[0].spans['entity_starts'][0]
  assert docs[0][start:end] == 'Guido van Rossum'
  plain = jsonl.read_jsonl_documents([path], 'text', '')
  assert not hasattr(plain[0], 'spans')
  bad = _write(tmp_path, [{'text': 'abc', 'entities': [[2, 9]]}], 'bad.jsonl')
  with pytest.raises(ValueError, match=r'bad.jsonl:1: field .entities. must be'):
    jsonl.read_jsonl_documents([bad], 'text', 'entity_starts:entities')
  with pytest.raises(ValueError, match='no string field'):
    jsonl.read_jsonl_documents([bad], 'body', '')
  with pytest.raises(ValueError, match='row_key:json_field'):
    jsonl.parse_span_fields('entities')


def test_sentencepiece_offsets_end_each_token_where_its_text_ends(spm_path):
  tokenizer = tokenizers.load_tokenizer(spm_path)
  text = 'Guido van Rossum wrote Python. 北京 café!'
  ids, ends = tokenizer.encode_with_offsets(text)
  np.testing.assert_array_equal(ids, tokenizer.encode(text))
  assert np.all(np.diff(ends) >= 0) and ends[-1] == len(text)
  assert text.index('Rossum') + len('Rossum') in ends.tolist()
  assert text.index('café') + len('café') in ends.tolist()  # Characters, not UTF-8 bytes.


def test_span_unit_starts_make_each_span_one_unit():
  table = np.array([False, True, True, False, True])  # ids 1, 2, 4 start words.
  ids = np.array([1, 3, 2, 3, 4, 2])  # words: [1 3] [2 3] [4] [2]
  ends = np.array([2, 4, 6, 8, 10, 12])  # each token two characters
  # A span over characters 2..9 (tokens 1-4) is one unit; the token after it starts one.
  flags = word_units.span_unit_starts(ids, ends, [(2, 10)], table)
  np.testing.assert_array_equal(flags, [True, True, False, False, False, True])
  np.testing.assert_array_equal(
    word_units.span_unit_starts(ids, ends, [], table), [True, False, True, False, True, True]
  )


def test_loader_rows_carry_entity_units_and_ernie_masks_them_whole(tmp_path, spm_path):
  config = base.get_config()
  config.data.source = 'jsonl'
  config.data.text_files = _write(tmp_path, _records())
  config.data.span_fields = 'entity_starts:entities'
  tokenizer = tokenizers.load_tokenizer(spm_path)
  objective = objective_config(mask_rate=0.5, ernie_stage='entity')
  preprocess = ernie.make_preprocess(objective, tokenizer, seed=0)
  seen = []
  loader = Loader(
    sources.load_documents(config.data, 'train'),
    tokenizer,
    shards=ShardSpec.create(4, 1, 0, 1),
    seq_len=64,
    framing=ernie.FRAMING,
    preprocess=lambda rows: seen.append(rows) or preprocess(rows),
    seed=0,
    train=True,
  )
  entity_ids = [tokenizer.encode(e).tolist() for e in ENTITIES]
  # A bare '▁' before an entity is the space outside its span: not part of the unit.
  entity_ids = [ids[1:] if tokenizer.id_to_piece(ids[0]) == '▁' else ids for ids in entity_ids]
  whole = 0
  for _ in range(6):
    batch = next(loader)
    rows = seen[-1]
    starts = rows['entity_starts']
    assert starts.dtype == bool and not starts[rows['segment_ids'] == 0].any()
    for b in range(4):
      tokens = rows['tokens'][b].tolist()
      for ids in entity_ids:  # Each entity is one unit: starts at its first token only.
        for i in range(len(tokens) - len(ids) + 1):
          if tokens[i : i + len(ids)] == ids:
            assert starts[b, i] and not starts[b, i + 1 : i + len(ids)].any()
            picked = batch['weights'][b, i : i + len(ids)]
            assert picked.min() == picked.max()  # Masked whole or not at all.
            whole += int(picked.max() > 0)
  assert whole > 10
