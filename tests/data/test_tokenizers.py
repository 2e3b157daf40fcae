"""Tests of data/tokenizers.py and data/wordpiece.py."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from configs import base
from data import sources, tokenizers, wordpiece
from data.wordpiece import WordPieceTokenizer

BERT_VOCAB = '/work/shared/data/vocab/bert-base-uncased/vocab.txt'
SENTENCE = 'The assert statement raises an exception when the expression is false.'


@pytest.fixture(scope='module')
def embedded_docs():
  return sources.load_documents(base.get_config().data, 'train')


@pytest.fixture(scope='module')
def spm_path(embedded_docs, tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp('spm') / 'sub' / 'spm')
  return tokenizers.train_sentencepiece(embedded_docs, prefix, vocab_size=1000, max_docs=1000)


def test_sentencepiece_special_ids(spm_path):
  tok = tokenizers.load_tokenizer(spm_path)
  assert isinstance(tok, tokenizers.SentencePieceTokenizer)
  assert tok.vocab_size == 1000
  ids = (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.cls_id, tok.sep_id, tok.mask_id)
  assert ids == (0, 1, 2, 3, 4, 5, 6)
  assert [tok.id_to_piece(i) for i in (4, 5, 6)] == ['[CLS]', '[SEP]', '[MASK]']
  assert tok.special_ids.dtype == np.int32
  np.testing.assert_array_equal(tok.special_ids, np.arange(7))
  assert tok.path == spm_path


def test_sentencepiece_round_trip(spm_path):
  tok = tokenizers.load_tokenizer(spm_path)
  ids = tok.encode(SENTENCE)
  assert ids.dtype == np.int32 and ids.ndim == 1
  assert 5 < len(ids) < len(SENTENCE)  # Real subwords, not characters.
  assert not np.isin(ids, tok.special_ids).any()  # No specials added, nothing unknown.
  assert tok.decode(ids) == SENTENCE
  assert tok.decode(np.concatenate([[tok.pad_id], ids, [tok.pad_id] * 3])) == SENTENCE
  assert tok.encode('').shape == (0,)


def test_sentencepiece_deterministic_fingerprint(spm_path, embedded_docs, tmp_path):
  again = tokenizers.train_sentencepiece(embedded_docs, str(tmp_path / 'b'), 1000, max_docs=1000)
  fingerprint = tokenizers.load_tokenizer(spm_path).fingerprint()
  assert tokenizers.load_tokenizer(again).fingerprint() == fingerprint
  with open(spm_path, 'rb') as f:
    assert fingerprint == hashlib.sha256(f.read()).hexdigest()
  # A different document sample gives a different model.
  other = tokenizers.train_sentencepiece(embedded_docs, str(tmp_path / 'c'), 1000, 40, seed=1)
  assert tokenizers.load_tokenizer(other).fingerprint() != fingerprint


def test_sentencepiece_vocab_too_large(embedded_docs, tmp_path):
  with pytest.raises(ValueError, match=r'vocab_size=5000 is too large.*lower data.vocab_size'):
    tokenizers.train_sentencepiece(embedded_docs, str(tmp_path / 'x'), 5000, max_docs=3)
  assert not os.path.exists(tmp_path / 'x.model')


def test_sentencepiece_model_without_bert_pieces(embedded_docs, tmp_path):
  lines = [line for doc in list(embedded_docs)[:20] for line in doc.splitlines() if line.strip()]
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines),
    model_prefix=str(tmp_path / 'plain'),
    vocab_size=300,
    minloglevel=2,
  )
  with pytest.raises(ValueError, match=r"lacks pieces \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"):
    tokenizers.load_tokenizer(str(tmp_path / 'plain.model'))


def test_load_tokenizer_errors(tmp_path):
  missing = str(tmp_path / 'missing.model')
  with pytest.raises(FileNotFoundError, match='missing.model'):
    tokenizers.load_tokenizer(missing)
  other = tmp_path / 'tokenizer.json'
  other.write_text('{}')
  with pytest.raises(ValueError, match=r'tokenizer.json.*neither.*\.model.*\.txt'):
    tokenizers.load_tokenizer(str(other))


def test_get_or_train_tokenizer(tmp_path, monkeypatch):
  config = base.get_config()
  config.data.vocab_size = 500
  config.data.tokenizer_train_docs = 30
  workdir = str(tmp_path / 'work')
  # Other processes never train: without process 0's model they cannot load one.
  with pytest.raises(FileNotFoundError, match='spm.model'):
    tokenizers.get_or_train_tokenizer(config, workdir, process_index=1)
  calls = []
  tok = tokenizers.get_or_train_tokenizer(config, workdir, barrier=lambda: calls.append(1))
  assert calls == [1]
  assert tok.path == os.path.join(workdir, 'tokenizer', 'spm.model')
  assert tok.vocab_size == 500

  def fail(*args, **kwargs):
    raise AssertionError('retrained an existing tokenizer')

  monkeypatch.setattr(tokenizers, 'train_sentencepiece', fail)
  again = tokenizers.get_or_train_tokenizer(config, workdir)
  assert again.fingerprint() == tok.fingerprint()
  config.data.tokenizer_path = tok.path
  assert tokenizers.get_or_train_tokenizer(config, str(tmp_path / 'w2')).path == tok.path


def test_train_tokenizer_cli(tmp_path):
  prefix = str(tmp_path / 'cli' / 'spm')
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'tools.train_tokenizer',
      '--config=configs/base.py',
      f'--output={prefix}',
      '--config.data.vocab_size=400',
      '--config.data.tokenizer_train_docs=25',
    ],
    capture_output=True,
    text=True,
    check=False,
    cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  )
  assert result.returncode == 0, result.stderr
  assert f'Wrote {prefix}.model' in result.stdout
  assert tokenizers.load_tokenizer(prefix + '.model').vocab_size == 400


# WordPiece: a tiny vocabulary where greedy longest-match differs from shorter matches.
WORDPIECE_VOCAB = [
  '[PAD]',
  '[UNK]',
  '[CLS]',
  '[SEP]',
  '[MASK]',
  'hello',  # 5
  'world',
  ',',
  '!',
  '.',
  'un',  # 10
  '##aff',
  '##able',
  '##a',
  '##ff',
  'cafe',  # 15
  '北',
  '京',
  'a',
  '$',
  '##s',  # 20
  'Hello',
]


@pytest.fixture
def vocab_path(tmp_path):
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(WORDPIECE_VOCAB) + '\n', encoding='utf-8')
  return str(path)


@pytest.mark.parametrize(
  'text, expected',
  [
    ('hello world', [5, 6]),
    ('Hello, WORLD!', [5, 7, 6, 8]),
    ('hello,world.', [5, 7, 6, 9]),
    ('Café', [15]),
    ('CAFÉ cafe\u0301', [15, 15]),  # Precomposed and combining accents.
    ('unaffable', [10, 11, 12]),  # Not un ##a ##ff ##able.
    ('unaffables', [10, 11, 12, 20]),
    ('unaffablez', [1]),  # One uncoverable character makes the whole word [UNK].
    ('xyz hello', [1, 5]),
    ('北京', [16, 17]),
    ('hello北京world', [5, 16, 17, 6]),
    ('$hello', [19, 5]),
    ('hello\tworld\x00\u200b\r\n', [5, 6]),  # \u200b is a format (control) char.
    ('hello\u00a0world', [5, 6]),
    ('a' * 100, [18] + [13] * 99),
    ('a' * 101, [1]),
    ('', []),
  ],
)
def test_wordpiece_ids(vocab_path, text, expected):
  tok = WordPieceTokenizer(vocab_path)
  ids = tok.encode(text)
  assert ids.dtype == np.int32
  assert ids.tolist() == expected


def test_wordpiece_special_ids_and_decode(vocab_path):
  tok = WordPieceTokenizer(vocab_path)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  assert (tok.bos_id, tok.eos_id) == (2, 3)
  np.testing.assert_array_equal(tok.special_ids, np.arange(5, dtype=np.int32))
  assert tok.vocab_size == len(WORDPIECE_VOCAB)
  assert tok.id_to_piece(11) == '##aff'
  assert tok.decode([2, 10, 11, 12, 5, 0, 0]) == '[CLS] unaffable hello'
  assert tok.decode(tok.encode('Hello, unaffable world!')) == 'hello , unaffable world !'


def test_wordpiece_cased(vocab_path):
  cased = WordPieceTokenizer(vocab_path, lowercase=False)
  assert cased.encode('Hello hello Café').tolist() == [21, 5, 1]
  # 'Hello' in the vocab means it was not lowercased: load_tokenizer infers cased.
  assert not tokenizers.load_tokenizer(vocab_path).lowercase


def test_wordpiece_load_and_missing_specials(vocab_path, tmp_path):
  path = tmp_path / 'uncased_vocab.txt'
  path.write_text('\n'.join(WORDPIECE_VOCAB[:-1]) + '\n', encoding='utf-8')
  tok = tokenizers.load_tokenizer(str(path))
  assert isinstance(tok, WordPieceTokenizer) and tok.lowercase
  assert tok.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()
  bad = tmp_path / 'bad_vocab.txt'
  bad.write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r"bad_vocab.txt lacks the special tokens \['\[MASK\]'\]"):
    tokenizers.load_tokenizer(str(bad))


@pytest.mark.skipif(not os.path.exists(BERT_VOCAB), reason='bert-base-uncased vocab.txt absent')
def test_bert_base_uncased_vocab():
  tok = tokenizers.load_tokenizer(BERT_VOCAB)
  assert tok.lowercase and tok.vocab_size == 30522
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert tok.encode('hello world').tolist() == [7592, 2088]
  assert tok.encode('Unaffable!').tolist() == [14477, 20961, 3468, 999]


@pytest.mark.parametrize(
  'texts, expected, decoded',
  [  # Chinese characters are a piece each; other tokens a piece per character.
    (
      ['中国队赢了', 'Go 中国!'],
      ['中', '国', '队', '赢', '了', 'G', '##o', '!'],
      ['中国队赢了', 'Go中国!'],
    ),
    # No capital anywhere: the tokenizer lowercases and strips accents, so 'e' joins 'é'.
    (['café 北京'], ['c', '##a', '##f', '##é', '##e', '北', '京'], ['cafe北京']),
  ],
)
def test_character_vocab_covers_its_texts(tmp_path, texts, expected, decoded):
  pieces = wordpiece.character_pieces(texts)
  assert pieces == [*wordpiece.SPECIAL_TOKENS.values(), *expected]
  path = wordpiece.write_vocab(pieces, str(tmp_path / 'vocab.txt'))
  assert os.listdir(tmp_path) == ['vocab.txt']  # No temporary file left behind.
  tok = tokenizers.load_tokenizer(path)
  for text, want in zip(texts, decoded, strict=True):
    ids = tok.encode(text).tolist()
    assert tok.unk_id not in ids and tok.decode(ids).replace(' ', '') == want
  for ch in ''.join(texts):
    if wordpiece._is_cjk(ord(ch)):
      assert tok.encode(ch).tolist() == [pieces.index(ch)]
  with pytest.raises(ValueError, match='distinct'):
    wordpiece.write_vocab(['[PAD]', '[PAD]'], str(tmp_path / 'bad.txt'))
