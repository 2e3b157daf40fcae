"""MSRA Chinese NER (data/msra.py): the zip reader, its errors, the sentence-index split,
the 'msra' task source, and configs/conll.py:msra (tagging) and msra,mrc (NER as MRC)
building rows from a fixture zip written here (no shared data)."""

import zipfile

import numpy as np
import pytest

from configs import conll as conll_config
from data import conll, msra, tasks
from data.loader import ShardSpec
from objectives import mrc_ner
from tests.training import finetune_runs
from training import experiment

# (characters, tags): a two- and a three-character entity, entities at both ends.
_SENTENCES = [
  ('张三在北京工作。', ['B-PER', 'I-PER', 'O', 'B-LOC', 'I-LOC', 'O', 'O', 'O']),
  ('新华社报道', ['B-ORG', 'I-ORG', 'I-ORG', 'O', 'O']),
  ('他说好', ['O', 'O', 'O']),
  ('李四到上海', ['B-PER', 'I-PER', 'O', 'B-LOC', 'I-LOC']),
]


def _text(sentences, newline: str = '\n') -> str:
  blocks = [
    newline.join(f'{c}\t{t}' for c, t in zip(chars, tags, strict=True)) for chars, tags in sentences
  ]
  return (newline * 2).join(blocks)  # No blank line after the last sentence.


def _write_zip(path, text: str | bytes, member: str = msra.MEMBER) -> str:
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
    archive.writestr(member, text)
  return str(path)


def test_reads_characters_and_tags_from_the_zip(tmp_path):
  path = _write_zip(tmp_path / msra.ZIP_NAME, _text(_SENTENCES) + '\n\n\n')
  sentences = msra.read_msra(path)
  assert sentences == [(list(chars), tags) for chars, tags in _SENTENCES]
  assert conll.entity_chunks(sentences[0][1]) == {('PER', 0, 2), ('LOC', 3, 5)}
  assert conll.entity_chunks(sentences[1][1]) == {('ORG', 0, 3)}
  # Windows line ends and runs of blank lines read the same.
  crlf = _write_zip(tmp_path / 'crlf.zip', '\r\n' + _text(_SENTENCES, '\r\n') + '\r\n')
  assert msra.read_msra(crlf) == sentences
  assert not list(tmp_path.glob('*.txt'))  # Read inside the zip, nothing extracted.


@pytest.mark.parametrize(
  'line',
  ['京 I-LOC', '京\tI-LOC\tx', '北京\tI-LOC', '京\tI-MISC', '京\tX-LOC', '京\ti-loc', '\u3000\tO',
   '京\t'],
  ids=['space', 'three-fields', 'two-chars', 'unknown-type', 'unknown-prefix', 'lowercase',
       'blank-char', 'no-tag'],
)  # fmt: skip
def test_a_malformed_line_names_its_line_number(tmp_path, line):
  text = '张\tB-PER\n三\tI-PER\n\n北\tB-LOC\n' + line + '\n'
  path = _write_zip(tmp_path / msra.ZIP_NAME, text)
  with pytest.raises(ValueError, match=r'dh_msra.zip:dh_msra.txt:5: expected "character<TAB>'):
    msra.read_msra(path)


def test_bad_bytes_and_a_wrong_member_are_named(tmp_path):
  path = _write_zip(tmp_path / 'bytes.zip', '张\tB-PER\n'.encode() + b'\xff\tO\n')
  with pytest.raises(ValueError, match=r'byte offset 10 \(line 2\) is not UTF-8'):
    msra.read_msra(path)
  path = _write_zip(tmp_path / 'other.zip', 'x\tO\n', member='msra_train.txt')
  with pytest.raises(ValueError, match=r"holds \['msra_train.txt'\], not dh_msra.txt"):
    msra.read_msra(path)


def test_split_by_index_is_fixed_disjoint_and_whole():
  splits = {s: msra.split_indices(23, s, test_start=20, valid_every=5) for s in msra.SPLITS}
  assert splits['valid'] == [0, 5, 10, 15]
  assert splits['test'] == [20, 21, 22]
  assert splits['train'] == [i for i in range(20) if i % 5]
  assert sorted(sum(splits.values(), [])) == list(range(23))  # Disjoint and whole.
  assert splits == {s: msra.split_indices(23, s, test_start=20, valid_every=5) for s in splits}
  # The shared file's sizes (its sentence count is 55,289).
  sizes = {s: len(msra.split_indices(msra.SENTENCES, s)) for s in msra.SPLITS}
  assert sizes == {'train': 45_592, 'valid': 5_066, 'test': 4_631}
  with pytest.raises(ValueError, match='boundary at sentence 50658'):
    msra.split_indices(msra.SENTENCES + 1, 'train')
  with pytest.raises(ValueError, match="split 'test' is empty: 4 sentences"):
    msra.split_indices(4, 'test')
  with pytest.raises(ValueError, match="split 'dev'"):
    msra.split_indices(4, 'dev')


def _fixture_dir(tmp_path, copies: int = 3):
  """A data.clue_dir holding dh_msra.zip: the four sentences `copies` times (12 sentences:
  valid = sentences 0 and 10, train the other 10; no test part)."""
  _write_zip(tmp_path / msra.ZIP_NAME, _text(_SENTENCES * copies))
  return str(tmp_path)


def test_task_source_reads_the_splits_from_clue_dir(tmp_path):
  config = conll_config.get_config('msra')
  config.data.clue_dir = _fixture_dir(tmp_path)
  train = tasks.load_examples(config.data, 'train')
  valid = tasks.load_examples(config.data, 'eval')
  assert [r['idx'] for r in valid] == [0, 10]
  assert [r['idx'] for r in train] == [i for i in range(12) if i not in (0, 10)]
  assert train[0] == {'words': list(_SENTENCES[1][0]), 'tags': _SENTENCES[1][1], 'idx': 1}
  config.data.clue_dir = ''
  with pytest.raises(ValueError, match=r"data.source='msra' reads dh_msra.zip from data.clue_dir"):
    tasks.load_examples(config.data, 'train')


def test_msra_configs_are_chinese_and_parse_their_variants():
  tagging_cfg, mrc_cfg = conll_config.get_config('msra'), conll_config.get_config('msra,mrc')
  assert tagging_cfg.data.source == mrc_cfg.data.source == 'msra'
  assert tagging_cfg.objective.labels == 'O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC'
  assert mrc_cfg.objective.module == 'objectives.mrc_ner'
  objective = mrc_ner.configure(mrc_cfg.objective)
  assert objective.types == ('PER', 'ORG', 'LOC')
  assert objective.queries == tuple(mrc_ner.MSRA_QUERIES[t] for t in objective.types)
  assert max(len(q) for q in objective.queries) <= 25  # Room for 100 characters at 128.
  assert conll_config.get_config('mrc').data.source == 'conll'
  with pytest.raises(ValueError, match='the variant is one of'):
    conll_config.get_config('msra,crf')


def _vocab(tmp_path) -> str:
  """A WordPiece vocab of the fixture's and the queries' characters (BERT-Chinese-like)."""
  chars = sorted({c for chars, _ in _SENTENCES for c in chars}
                 | {c for q in mrc_ner.MSRA_QUERIES.values() for c in q})  # fmt: skip
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *chars]) + '\n')
  return str(path)


@pytest.mark.parametrize('variant', ['msra', 'msra,mrc'])
def test_msra_configs_build_rows_from_the_zip(tmp_path, variant):
  """The config's eval split through experiment.build, the loader and the objective's
  make_rows: one character per word, labels on every character."""
  config = finetune_runs.tiny(conll_config.get_config(variant), _vocab(tmp_path), tmp_path,
                              **{'data.clue_dir': _fixture_dir(tmp_path)})  # fmt: skip
  config.seq_len = 40
  exp = experiment.build(config, str(tmp_path / 'run'))
  batch = next(iter(exp.loader('eval', ShardSpec.create(2, 1, 0, 1), pad_after_end=False)))
  tokens, unk = np.asarray(batch['inputs']), exp.tokenizer.unk_id
  first = _SENTENCES[0]  # Sentence 0, the first of the valid split.
  char_ids = [exp.tokenizer.encode(c).tolist() for c in first[0]]
  assert all(len(ids) == 1 and ids[0] != unk for ids in char_ids)
  char_ids = [ids[0] for ids in char_ids]
  if variant == 'msra':
    assert tokens.shape == (2, 40)
    assert tokens[0, : len(first[0]) + 2].tolist() == [2, *char_ids, 3]
    labels = msra.TAGS
    assert [labels[t] for t in batch['targets'][0, 1 : len(first[0]) + 1]] == first[1]
    assert batch['weights'][0].sum() == len(first[0])
    return
  assert tokens.shape == (2, 3, 40)  # One sub-row per type: PER, ORG, LOC.
  per_query = len(mrc_ner.MSRA_QUERIES['PER'])
  offset = per_query + 2  # [CLS] query [SEP]
  assert unk not in tokens[0, 0, 1 : offset - 1]
  assert tokens[0, 0, offset : offset + len(first[0])].tolist() == char_ids
  per_starts = np.flatnonzero(batch['starts'][0, 0]) - offset
  per_ends = np.flatnonzero(batch['ends'][0, 0]) - offset
  assert per_starts.tolist() == [0] and per_ends.tolist() == [1]  # 张三
  loc_offset = len(mrc_ner.MSRA_QUERIES['LOC']) + 2
  assert (np.flatnonzero(batch['starts'][0, 2]) - loc_offset).tolist() == [3]  # 北京
  assert (np.flatnonzero(batch['ends'][0, 2]) - loc_offset).tolist() == [4]
  assert batch['starts'][0, 1].sum() == 0  # No ORG in sentence 0.
