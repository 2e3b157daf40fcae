"""CoNLL-2003 reader, label list and first-sub-token label alignment."""

import numpy as np
import pytest

from data import conll

_FIXTURE = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
. . O O

-DOCSTART- -X- -X- O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

in IN B-PP O
Bonn NNP B-NP B-LOC"""  # The last sentence has no trailing blank line.


def test_reads_sentences_skipping_docstart(tmp_path):
  path = tmp_path / 'train.txt'
  path.write_text(_FIXTURE, encoding='utf-8')
  sentences = conll.read_conll(str(path))
  assert sentences == [
    (['EU', 'rejects', 'German', '.'], ['B-ORG', 'O', 'B-MISC', 'O']),
    (['Peter', 'Blackburn'], ['B-PER', 'I-PER']),
    (['in', 'Bonn'], ['O', 'B-LOC']),
  ]
  assert conll.label_list(sentences) == ['O', 'B-LOC', 'B-MISC', 'B-ORG', 'B-PER', 'I-PER']


def test_trailing_blank_lines_add_no_empty_sentence(tmp_path):
  path = tmp_path / 'valid.txt'
  path.write_text(_FIXTURE + '\n\n\n', encoding='utf-8')
  assert len(conll.read_conll(str(path))) == 3


def test_wrong_column_count_names_the_line(tmp_path):
  path = tmp_path / 'bad.txt'
  path.write_text('EU NNP B-NP B-ORG\nrejects O\n', encoding='utf-8')
  with pytest.raises(ValueError, match=r'bad.txt:2: expected 4 columns'):
    conll.read_conll(str(path))


def test_first_subtoken_labels():
  label_to_id = {'O': 0, 'B-PER': 1, 'I-PER': 2}
  # [CLS] Pet ##er Black ##burn ##e runs [SEP] [PAD] [PAD]
  word_ids = np.array([-1, 0, 0, 1, 1, 1, 2, -1, -1, -1])
  labels = conll.first_subtoken_labels(word_ids, ['B-PER', 'I-PER', 'O'], label_to_id)
  np.testing.assert_array_equal(labels, [-100, 1, -100, 2, -100, -100, 0, -100, -100, -100])
  assert labels.dtype == np.int32
  # A custom ignore id; a one-word sentence whose first sub-token follows [CLS].
  np.testing.assert_array_equal(
    conll.first_subtoken_labels([-1, 0, 0, -1], ['B-PER'], label_to_id, ignore=-1), [-1, 1, -1, -1]
  )
  # Two one-piece words in a row both get their labels.
  np.testing.assert_array_equal(
    conll.first_subtoken_labels([0, 1], ['O', 'O'], label_to_id), [0, 0]
  )


def test_first_subtoken_labels_errors():
  with pytest.raises(ValueError, match='out of range'):
    conll.first_subtoken_labels([-1, 0, 2], ['O', 'O'], {'O': 0})
  with pytest.raises(ValueError, match="'B-LOC'"):
    conll.first_subtoken_labels([0], ['B-LOC'], {'O': 0})
