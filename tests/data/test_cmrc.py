"""CMRC 2018 through the SQuAD path: its competition layout read with located answers,
every CJK character a word of its own (features and answer texts), and CMRC's
character-level exact match and F1 by hand, through decode_predictions and the scorer."""

import json

import numpy as np
import pytest

from configs import squad as squad_config
from data import squad
from data.wordpiece import WordPieceTokenizer
from evaluation import task_metrics, task_scores
from objectives import span_qa

CONTEXT = '《战国无双3》是由光荣和ω-force开发的游戏，发售于2010年。'


def test_cjk_characters_are_words_and_join_without_spaces():
  words, char_to_word = squad.context_words('光荣 和ω-force abc 2010年')
  assert words == ['光', '荣', '和', 'ω-force', 'abc', '2010', '年']
  assert char_to_word[:4] == [0, 1, 1, 2]  # The space after 荣 belongs to it.
  assert squad.join_words(words) == '光荣和ω-force abc 2010年'
  assert squad.join_words(['the', 'cat']) == 'the cat'  # English unchanged.


def test_cmrc_layout_is_read_with_located_answers(tmp_path):
  layout = [{
    'context_id': 'C0', 'title': 't', 'context_text': CONTEXT,
    'qas': [
      {'query_id': 'Q0', 'query_text': '谁开发的？', 'answers': ['光荣和ω-force', '光荣']},
      {'query_id': 'Q1', 'query_text': '哪一年？', 'answers': [2010.0, '二零一零', '2010年']},
    ],
  }]  # fmt: skip
  path = tmp_path / 'cmrc.json'
  path.write_text(json.dumps(layout, ensure_ascii=False), encoding='utf-8')
  q0, q1 = squad.read_squad(str(path))
  assert q0['id'] == 'Q0' and q0['context'] == CONTEXT and not q0['is_impossible']
  assert q0['answer_starts'] == [CONTEXT.index('光荣和'), CONTEXT.index('光荣')]
  # A number read as a float comes back as its digits; an answer not in the context keeps
  # offset -1 and goes last.
  assert q1['answers'] == ['2010', '2010年', '二零一零']
  assert q1['answer_starts'] == [CONTEXT.index('2010'), CONTEXT.index('2010'), -1]
  (tmp_path / 'bad.json').write_text('[{"x": 1}]')
  with pytest.raises(ValueError, match='nor a CMRC 2018 file'):
    squad.read_squad(str(tmp_path / 'bad.json'))


@pytest.fixture
def chinese_tok(tmp_path):
  chars = sorted(set(CONTEXT + '谁开发的？哪一年') - {' '})
  pieces = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'ω', '##-', '##f', '##o', '##r', '##c',
            '##e', '-', '20', '##10', *chars]  # fmt: skip
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(dict.fromkeys(pieces)) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path))


def test_chinese_features_point_at_the_answer_characters(chinese_tok):
  start = CONTEXT.index('光荣和')
  record = {'id': 'Q0', 'question': '谁开发的？', 'context': CONTEXT, 'answers': ['光荣和'],
            'answer_starts': [start], 'is_impossible': False, 'idx': 0}  # fmt: skip
  (row,) = squad.features(record, chinese_tok, max_seq_length=64, doc_stride=32,
                          max_query_length=16, train=True)  # fmt: skip
  s, e = int(row['start_positions']), int(row['end_positions'])
  assert [chinese_tok.id_to_piece(int(t)) for t in row['tokens'][s : e + 1]] == ['光', '荣', '和']
  # Decoding that span gives the answer without spaces.
  logits = np.full((1, 64), -10.0)
  start_logits, end_logits = logits.copy(), logits.copy()
  start_logits[0, s], end_logits[0, e] = 5.0, 5.0
  maps = (row['token_to_word'][None], row['max_context'][None])
  predictions, _ = squad.postprocess([record], [(start_logits, end_logits)], [maps])
  assert predictions == {'Q0': '光荣和'}
  # An answer with offset -1 trains nothing (as BERT drops an answer not found).
  unlocated = dict(record, answers=['二零一零'], answer_starts=[-1])
  assert squad.features(unlocated, chinese_tok, max_seq_length=64, doc_stride=32,
                        max_query_length=16, train=True) == []  # fmt: skip


def test_cmrc_metrics_by_hand():
  assert task_metrics.cmrc_segments('光荣和ω-Force, 2010年!') == ['光', '荣', '和', 'ω', 'force',
                                                                  '2010', '年']  # fmt: skip
  assert task_metrics.cmrc_exact('光荣和ω-force。', ['光荣和ω-force']) == 1.0
  assert task_metrics.cmrc_exact('光荣', ['光荣和ω-force']) == 0.0
  # '光荣' against '光荣和': common run 2, precision 2/2, recall 2/3 -> F1 0.8.
  assert task_metrics.cmrc_f1('光荣', ['光荣和', '战国']) == pytest.approx(0.8)
  # The common run must be contiguous: '光和' shares runs of 1 only with '光荣和'.
  assert task_metrics.cmrc_f1('光和', ['光荣和']) == pytest.approx(
    2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)
  )
  assert task_metrics.cmrc_f1('', ['光荣']) == 0.0
  scores = task_metrics.cmrc_scores({'a': '光荣', 'b': '2010年'}, {'a': ['光荣和'], 'b': ['2010年'],
                                                              'c': ['x']})  # fmt: skip
  assert scores['exact_match'] == pytest.approx(100 / 3)
  assert scores['f1'] == pytest.approx(100 * (0.8 + 1.0) / 3)


def test_decode_predictions_names_the_cmrc_scorer():
  config = squad_config.get_config('cmrc2018')
  assert config.objective.qa_metric == 'cmrc' and config.reference.scores == {}
  decoded = {'metric': 'cmrc', 'version_2': False, 'predictions': {'a': '光荣'},
             'no_answer': {}, 'answers': {'a': ['光荣和']}, 'coverage': 1.0}  # fmt: skip
  result = task_scores.score(decoded)
  assert result['scores'] == {'cmrc_em': 0.0, 'cmrc_f1': pytest.approx(0.8)}
  config.objective.qa_metric = 'bleu'
  outputs = {key: np.zeros((1, 8)) for key in ('start_logits', 'end_logits', 'max_context')}
  outputs.update(token_to_word=np.full((1, 8), -1), example_id=np.zeros(1, int),
                 feature_index=np.zeros(1, int))  # fmt: skip
  record = {'id': 'a', 'question': 'q', 'context': '光荣', 'answers': ['光荣'],
            'answer_starts': [0], 'is_impossible': False, 'idx': 0}  # fmt: skip
  with pytest.raises(ValueError, match="qa_metric='bleu'"):
    span_qa.decode_predictions(config.objective, outputs, [record])
