"""GLUE readers on tiny fixtures in the download script's layout, quirks included."""

import logging

import numpy as np
import pytest

from data import glue


def _write(root, task_dir, name, lines):
  folder = root / task_dir
  folder.mkdir(parents=True, exist_ok=True)
  (folder / name).write_text(''.join(line + '\n' for line in lines), encoding='utf-8')


def test_table_covers_glue_and_ax():
  assert set(glue.TASKS) == {
    'cola', 'sst2', 'mrpc', 'stsb', 'qqp', 'mnli', 'qnli', 'rte', 'wnli', 'ax'
  }  # fmt: skip
  assert glue.TASKS['stsb'].is_regression and not glue.TASKS['rte'].is_regression
  assert glue.TFDS_NAMES['sst2'] == 'glue/sst2'
  assert glue.TASKS['mnli'].labels == ('entailment', 'neutral', 'contradiction')


def test_cola_train_has_no_header_but_test_does(tmp_path):
  _write(
    tmp_path, 'CoLA', 'train.tsv', ['gj04\t1\t\tThe dog barked.', 'gj04\t0\t*\tDog the barked.']
  )
  _write(tmp_path, 'CoLA', 'test.tsv', ['index\tsentence', '0\tA cat sat.', '1\tSat cat a.'])
  train = glue.read_glue(str(tmp_path), 'cola', 'train')
  assert train == [
    {'text_a': 'The dog barked.', 'text_b': None, 'label': 1, 'idx': 0},
    {'text_a': 'Dog the barked.', 'text_b': None, 'label': 0, 'idx': 1},
  ]
  test = glue.read_glue(str(tmp_path), 'cola', 'test')
  assert [r['text_a'] for r in test] == ['A cat sat.', 'Sat cat a.']
  assert [r['label'] for r in test] == [None, None] and [r['idx'] for r in test] == [0, 1]


def test_mrpc_bom_header_and_unbalanced_quote(tmp_path):
  # The real file starts with a byte-order mark and has a lone '"' (QUOTE_NONE keeps it).
  _write(
    tmp_path,
    'MRPC',
    'dev.tsv',
    [
      '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String',
      '1\t11\t12\t"No," he said.\tHe said no.',
      '0\t13\t14\tA b.\tC d.',
    ],
  )
  records = glue.read_glue(str(tmp_path), 'mrpc', 'dev')
  assert records[0] == {'text_a': '"No," he said.', 'text_b': 'He said no.', 'label': 1, 'idx': 0}
  assert records[1]['label'] == 0


def test_stsb_scores_are_floats_and_test_has_none(tmp_path):
  head = 'index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2'
  _write(tmp_path, 'STS-B', 'dev.tsv', [head + '\tscore', '7\tg\tf\ty\t0\tn\tn\tA.\tB.\t3.800'])
  _write(tmp_path, 'STS-B', 'test.tsv', [head, '3\tg\tf\ty\t0\tn\tn\tC.\tD.'])
  (dev,) = glue.read_glue(str(tmp_path), 'stsb', 'dev')
  assert dev == {'text_a': 'A.', 'text_b': 'B.', 'label': 3.8, 'idx': 7}
  assert glue.read_glue(str(tmp_path), 'stsb', 'test')[0]['label'] is None


def test_mnli_matched_and_mismatched_dev(tmp_path):
  head = (
    'index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t'
    'sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t'
    'label5\tgold_label'
  )
  parses = '\t'.join(['p'] * 4)
  votes = '\t'.join(['neutral'] * 5)
  _write(
    tmp_path,
    'MNLI',
    'dev_matched.tsv',
    [head, f'0\t1\t1n\tfiction\t{parses}\tP.\tH.\t{votes}\tneutral'],
  )
  _write(
    tmp_path,
    'MNLI',
    'dev_mismatched.tsv',
    [head, f'5\t2\t2c\tletters\t{parses}\tQ.\tI.\t{votes}\tcontradiction'],
  )
  matched = glue.read_glue(str(tmp_path), 'mnli', 'dev_matched')
  mismatched = glue.read_glue(str(tmp_path), 'mnli', 'dev_mismatched')
  assert matched == [{'text_a': 'P.', 'text_b': 'H.', 'label': 1, 'idx': 0}]
  assert mismatched == [{'text_a': 'Q.', 'text_b': 'I.', 'label': 2, 'idx': 5}]
  with pytest.raises(ValueError, match='dev_matched'):
    glue.read_glue(str(tmp_path), 'mnli', 'dev')


def test_qqp_skips_malformed_lines_other_tasks_reject_them(tmp_path, caplog):
  head = 'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate'
  _write(
    tmp_path,
    'QQP',
    'train.tsv',
    [
      head,
      '4\t1\t2\tWhy?\tHow?\t0',
      '5\t3\t4\tBroken question',
      'rest of it\t1',
      '6\t5\t6\tA?\tB?\t1',
    ],
  )
  with caplog.at_level(logging.WARNING):
    records = glue.read_glue(str(tmp_path), 'qqp', 'train')
  assert [(r['idx'], r['label']) for r in records] == [(4, 0), (6, 1)]
  assert 'skipped 2 malformed' in caplog.text
  _write(tmp_path, 'RTE', 'train.tsv', ['index\tsentence1\tsentence2\tlabel', '0\tA.\tentailment'])
  with pytest.raises(ValueError, match=r'train.tsv:2: 3 tab-separated fields'):
    glue.read_glue(str(tmp_path), 'rte', 'train')


def test_ax_reads_diagnostic_folder(tmp_path):
  _write(tmp_path, 'diagnostic', 'diagnostic.tsv', ['index\tsentence1\tsentence2', '0\tP.\tH.'])
  assert glue.read_glue(str(tmp_path), 'ax', 'test') == [
    {'text_a': 'P.', 'text_b': 'H.', 'label': None, 'idx': 0}
  ]


def test_errors_name_the_file_column_and_label(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'QNLI/dev.tsv'):
    glue.read_glue(str(tmp_path), 'qnli', 'dev')
  with pytest.raises(ValueError, match='Unknown GLUE task'):
    glue.read_glue(str(tmp_path), 'squad', 'dev')
  _write(tmp_path, 'QNLI', 'dev.tsv', ['index\tquestion\ttext\tlabel', '0\tQ?\tS.\tentailment'])
  with pytest.raises(ValueError, match=r"no column 'sentence'"):
    glue.read_glue(str(tmp_path), 'qnli', 'dev')
  _write(tmp_path, 'WNLI', 'dev.tsv', ['index\tsentence1\tsentence2\tlabel', '0\tA.\tB.\t2'])
  with pytest.raises(ValueError, match=r"dev.tsv:2: label '2'"):
    glue.read_glue(str(tmp_path), 'wnli', 'dev')
  _write(tmp_path, 'SST-2', 'train.tsv', ['sentence\tscore', 'good .\t1'])
  with pytest.raises(ValueError, match=r"no column 'label'"):
    glue.read_glue(str(tmp_path), 'sst2', 'train')


def test_tfds_examples_become_the_same_records():
  # Shaped like tfds.as_numpy(tfds.load('glue/<task>')) examples: bytes text, int labels.
  assert glue.from_tfds_example(
    'mnli', {'premise': b'P.', 'hypothesis': b'H.', 'label': np.int64(2), 'idx': np.int32(9)}
  ) == {'text_a': 'P.', 'text_b': 'H.', 'label': 2, 'idx': 9}
  assert glue.from_tfds_example('cola', {'sentence': b'Hi.', 'label': 1, 'idx': 0}) == {
    'text_a': 'Hi.', 'text_b': None, 'label': 1, 'idx': 0
  }  # fmt: skip
  qqp = glue.from_tfds_example(
    'qqp', {'question1': b'A?', 'question2': 'B?', 'label': -1, 'idx': 3}
  )  # test split: -1
  assert qqp == {'text_a': 'A?', 'text_b': 'B?', 'label': None, 'idx': 3}
  stsb = glue.from_tfds_example(
    'stsb', {'sentence1': b'A.', 'sentence2': b'B.', 'label': np.float32(4.5), 'idx': 1}
  )
  assert stsb['label'] == 4.5 and isinstance(stsb['label'], float)
  with pytest.raises(ValueError, match="no feature 'question'"):
    glue.from_tfds_example('qnli', {'sentence': b'S.', 'label': 0, 'idx': 0})


def test_file_and_tfds_label_orders_agree(tmp_path):
  # RTE's file says 'not_entailment'; TFDS glue/rte calls that class 1.
  _write(
    tmp_path, 'RTE', 'dev.tsv', ['index\tsentence1\tsentence2\tlabel', '0\tA.\tB.\tnot_entailment']
  )
  (from_file,) = glue.read_glue(str(tmp_path), 'rte', 'dev')
  from_tfds = glue.from_tfds_example(
    'rte', {'sentence1': b'A.', 'sentence2': b'B.', 'label': 1, 'idx': 0}
  )
  assert from_file == from_tfds
