"""Invalid UTF-8 in data files: with data.on_decode_error='strict' an error naming the
file, the byte offset and the line; with 'replace' U+FFFD, counted in one log warning."""

import logging

import pytest

from configs import base
from data import conll, jsonl, sources, squad, text_decoding, wordpiece

# A byte far past the text stream's first 8 KiB chunk, where Python's own error would
# count its position from the chunk's start instead of the file's.
PREFIX = 'Good line here, \u00e9t\u00e9 caf\u00e9.\n' * 1000
BAD = b'\xff\xfe'


def _data_config(**overrides):
  config = base.get_config().data
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def _corpus(tmp_path):
  """Three text files; b.txt has two bad bytes at a known offset. Returns that offset."""
  (tmp_path / 'a.txt').write_text('First doc.\n\nSecond doc.\n', encoding='utf-8')
  prefix = PREFIX.encode()
  (tmp_path / 'b.txt').write_bytes(prefix + b'bad ' + BAD + b' bytes\n\nlast doc\n')
  (tmp_path / 'c.txt').write_text('Third doc.\n', encoding='utf-8')
  return len(prefix) + len(b'bad ')


def test_strict_names_the_file_byte_and_line(tmp_path):
  offset = _corpus(tmp_path)
  config = _data_config(source='text', text_files=str(tmp_path / '*.txt'), eval_fraction=0.5)
  with pytest.raises(ValueError) as raised:
    sources.load_documents(config, 'train')
  message = str(raised.value)
  assert message.startswith(f'{tmp_path / "b.txt"}: invalid UTF-8 at byte {offset} (line 1001: ')
  assert 'invalid start byte, bytes ff' in message
  assert 'set data.on_decode_error=replace' in message
  assert isinstance(raised.value.__cause__, UnicodeDecodeError)
  assert offset > 8192 and f'position {offset}' not in str(raised.value.__cause__)


def test_replace_reads_u_fffd_and_logs_the_count(tmp_path, caplog):
  _corpus(tmp_path)
  pattern = str(tmp_path / '*.txt')
  config = _data_config(source='text', text_files=pattern, on_decode_error='replace')
  config.eval_text_files = str(tmp_path / 'a.txt')
  with caplog.at_level(logging.WARNING):
    documents = list(sources.load_documents(config, 'train'))
  bad_document = documents[2]
  assert bad_document.endswith('bad \ufffd\ufffd bytes')
  assert bad_document.startswith(PREFIX.splitlines()[0])
  assert documents[3:] == ['last doc', 'Third doc.']
  warnings = [r.getMessage() for r in caplog.records if 'on_decode_error=replace' in r.getMessage()]
  assert warnings == [
    'data.on_decode_error=replace: 2 invalid UTF-8 byte(s) read as U+FFFD in 1 of 3 file(s): '
    f'{tmp_path / "b.txt"} (2).'
  ]


def test_valid_text_reads_the_same_in_both_modes_without_a_warning(tmp_path, caplog):
  path = tmp_path / 'ok.txt'
  path.write_bytes('A \ufffd kept\r\nas is \U0001f600\r\n\r\nnext\rline\n'.encode())
  with caplog.at_level(logging.WARNING):
    strict = sources.read_text_documents([str(path)], 'strict')
    replaced = sources.read_text_documents([str(path)], 'replace')
  assert strict == replaced == ['A \ufffd kept\nas is \U0001f600', 'next\nline']
  assert not caplog.records


def test_an_unknown_mode_names_the_key(tmp_path):
  _corpus(tmp_path)
  config = _data_config(source='text', text_files=str(tmp_path / 'a.txt'), on_decode_error='skip')
  with pytest.raises(ValueError, match=r"data.on_decode_error='skip' must be one of"):
    sources.load_documents(config, 'train')


def test_jsonl_strict_and_replace(tmp_path, caplog):
  good = tmp_path / 'good.jsonl'
  good.write_text('{"text": "fine"}\n{"text": "also fine"}\n', encoding='utf-8')
  bad = tmp_path / 'bad.jsonl'
  head = b'{"text": "one"}\n{"text": "t'
  bad.write_bytes(head + b'\xc3(wo"}\n{"text": "three"}\n')
  config = _data_config(source='jsonl', text_files=f'{good},{bad}', eval_fraction=0.5)
  with pytest.raises(ValueError, match=rf'bad.jsonl: invalid UTF-8 at byte {len(head)} \(line 2: '):
    sources.load_documents(config, 'train')
  with caplog.at_level(logging.WARNING):
    documents = jsonl.read_jsonl_documents([str(good), str(bad)], 'text', '', 'replace')
  assert documents == ['fine', 'also fine', 'one', 't\ufffd(wo', 'three']
  assert any(
    '1 invalid UTF-8 byte(s) read as U+FFFD in 1 of 2 file(s)' in r.getMessage()
    for r in caplog.records
  )


def test_a_character_cut_at_the_end_of_the_file(tmp_path):
  path = tmp_path / 'cut.txt'
  path.write_bytes(b'ok\n\xe2\x82')  # The first two bytes of the euro sign.
  with pytest.raises(
    ValueError, match=r'cut.txt: invalid UTF-8 at byte 3 \(line 2: unexpected end'
  ):
    sources.read_text_documents([str(path)])
  assert sources.read_text_documents([str(path)], 'replace') == ['ok\n\ufffd\ufffd']


def test_the_offset_is_exact_across_scan_chunks(tmp_path, monkeypatch):
  """A character split between two read chunks is fine; the bad byte after it is found
  at its offset in the file."""
  monkeypatch.setattr(text_decoding, '_SCAN_CHUNK', 5)
  path = tmp_path / 'x.txt'
  data = b'abcd\xe2\x82\xac\n\xe2\x82\xacxy\x80z'  # Euro signs across chunk borders.
  path.write_bytes(data)
  assert text_decoding.first_invalid_byte(str(path)) == (13, 2, 'invalid start byte', b'\x80')
  path.write_bytes(data[:12])
  assert text_decoding.first_invalid_byte(str(path)) is None


def test_task_files_and_vocabularies_name_the_file(tmp_path):
  conll_file = tmp_path / 'train.txt'
  conll_file.write_bytes(b'EU NNP B-NP B-ORG\nrejects VBZ B-VP \xe9 O\n')
  with pytest.raises(
    ValueError,
    match=r'train.txt: invalid UTF-8 at byte 35 \(line 2: invalid continuation byte, bytes e9\); the file must be UTF-8',
  ):
    conll.read_conll(str(conll_file))
  squad_file = tmp_path / 'dev.json'
  squad_file.write_bytes(b'{"data": [{"paragraphs": [{"context": "\xc0\xaf"}]}]}')
  with pytest.raises(ValueError, match=r'dev.json: invalid UTF-8 at byte 39 \(line 1'):
    squad.read_squad(str(squad_file))
  vocab = tmp_path / 'vocab.txt'
  vocab.write_bytes(b'[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncaf\xe9\n')
  with pytest.raises(ValueError, match=r'vocab.txt: invalid UTF-8 at byte 34 \(line 6'):
    wordpiece.WordPieceTokenizer(str(vocab))


def test_an_error_not_from_the_file_stays_as_it_came(tmp_path):
  path = tmp_path / 'fine.txt'
  path.write_text('all good\n', encoding='utf-8')
  with pytest.raises(UnicodeDecodeError):
    with text_decoding.open_strict(str(path)) as f:
      f.read()
      b'\xff'.decode('utf-8')  # Some other decoding inside the block.
