"""Tests of data/squad.py: reading SQuAD, BERT's doc-stride features and n-best decoding."""

import json

import numpy as np
import pytest

from data import squad
from data.wordpiece import WordPieceTokenizer

SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
WORDS = ['who', 'was', 'born', 'in', 'when', 'he', 'paris', '(', ')', '-', '1895', '1943', '.']
WORDS += [f'w{i}' for i in range(40)] + ['q', '##s']


@pytest.fixture
def tok(tmp_path):
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(SPECIAL + WORDS) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path))


def _record(context, question='who', answers=(), starts=(), impossible=False):
  return {
    'id': 'q0',
    'question': question,
    'context': context,
    'answers': list(answers),
    'answer_starts': list(starts),
    'is_impossible': impossible,
    'idx': 0,
  }


def _context(n=20):
  return ' '.join(f'w{i}' for i in range(n))


def _answer_at(context, text):
  return context.index(text)


def test_context_words_maps_characters_to_whitespace_words():
  words, char_to_word = squad.context_words(' ab  c\td\u202fe')
  assert words == ['ab', 'c', 'd', 'e']
  # Leading space -> -1; spaces belong to the word before them.
  assert char_to_word == [-1, 0, 0, 0, 0, 1, 1, 2, 2, 3]


def test_windows_follow_doc_stride_and_frame_the_question(tok):
  # 20 one-token words; a 1-token question leaves 13 - 1 - 3 = 9 tokens per window.
  context = _context(20)
  rows = squad.features(
    _record(context), tok, max_seq_length=13, doc_stride=4, max_query_length=64, train=False
  )
  # Windows start at 0, 4, 8 and 12; the last (12-19) reaches the end of the document.
  assert [int(r['feature_index']) for r in rows] == [0, 1, 2, 3]
  doc = tok.encode(context)
  who = tok.encode('who')[0]
  for k, row in enumerate(rows):
    start = 4 * k
    length = min(9, 20 - start)
    window = list(doc[start : start + length])
    expected = [tok.cls_id, who, tok.sep_id, *window, tok.sep_id]
    assert row['tokens'][: len(expected)].tolist() == expected
    assert np.all(row['tokens'][len(expected) :] == tok.pad_id)
    assert row['segment_ids'].tolist() == [1] * len(expected) + [0] * (13 - len(expected))
    assert row['token_types'].tolist()[: len(expected)] == [0, 0, 0] + [1] * (length + 1)
    assert row['token_to_word'][3 : 3 + length].tolist() == list(range(start, start + length))
    assert np.all(row['token_to_word'][:3] == -1) and np.all(
      row['token_to_word'][3 + length :] == -1
    )
  # 8 tokens per window, stride 5: 0-7, 5-12, 10-17, 15-19.
  rows = squad.features(
    _record(context), tok, max_seq_length=12, doc_stride=5, max_query_length=64, train=False
  )
  firsts = [int(r['token_to_word'][3]) for r in rows]
  lasts = [int(r['token_to_word'].max()) for r in rows]
  assert firsts == [0, 5, 10, 15] and lasts == [7, 12, 17, 19]


def test_answer_span_maps_back_and_outside_windows_point_at_cls(tok):
  context = _context(20)
  answer = 'w9 w10'
  record = _record(context, answers=[answer], starts=[_answer_at(context, answer)])
  rows = squad.features(
    record, tok, max_seq_length=13, doc_stride=4, max_query_length=64, train=True
  )
  inside = []
  for row in rows:
    s, e = int(row['start_positions']), int(row['end_positions'])
    words = row['token_to_word'][3:][row['token_to_word'][3:] >= 0]
    if 9 in words and 10 in words:
      inside.append(int(row['feature_index']))
      assert tok.decode(row['tokens'][s : e + 1]) == answer
      assert row['token_to_word'][s] == 9 and row['token_to_word'][e] == 10
    else:
      assert s == e == 0  # [CLS]
  assert inside == [1, 2]  # windows 4-12 and 8-16 hold w9 w10; 0-8 does not.


def test_improved_span_is_the_answers_own_sub_tokens(tok):
  context = 'he was born in paris (1895-1943) .'
  record = _record(context, answers=['1895'], starts=[context.index('1895')])
  (row,) = squad.features(
    record, tok, max_seq_length=32, doc_stride=8, max_query_length=64, train=True
  )
  s, e = int(row['start_positions']), int(row['end_positions'])
  assert s == e and tok.id_to_piece(int(row['tokens'][s])) == '1895'
  # The whole word "(1895-1943)" is the word span; without the improvement it would start at '('.
  assert row['token_to_word'][s] == 5


def test_max_context_picks_the_window_with_most_context(tok):
  rows = squad.features(
    _record(_context(20)), tok, max_seq_length=13, doc_stride=4, max_query_length=64, train=False
  )
  owner = {}
  for row in rows:
    for p in np.flatnonzero(row['max_context']):
      assert int(row['token_to_word'][p]) not in owner  # Exactly one window scores each token.
      owner[int(row['token_to_word'][p])] = int(row['feature_index'])
  assert sorted(owner) == list(range(20))
  # Windows 0-8, 4-12, 8-16, 12-19 (one-token words): token 5 has min(5, 3) = 3 in window 0 and
  # min(1, 7) = 1 in window 1; token 7 has min(7, 1) = 1 vs min(3, 5) = 3; token 10 sits in
  # windows 1 (min(6, 2) = 2) and 2 (min(2, 6) = 2): a tie, where the 0.01 * length term is
  # equal too and the first window wins.
  # equal too and the first window wins; token 16 has 0 in window 2, min(4, 3) = 3 in window 3.
  assert owner[5] == 0 and owner[7] == 1 and owner[10] == 1 and owner[12] == 2 and owner[16] == 3


def test_question_is_truncated_to_max_query_length(tok):
  question = ' '.join(['q'] * 70)
  (row,) = squad.features(
    _record('w1 w2', question=question), tok, max_seq_length=80, doc_stride=8,
    max_query_length=64, train=False,
  )  # fmt: skip
  q = tok.encode('q')[0]
  assert row['tokens'][1:65].tolist() == [q] * 64 and row['tokens'][65] == tok.sep_id
  assert row['token_types'][65] == 0 and row['token_types'][66] == 1


def test_impossible_and_unfindable_answers(tok):
  context = _context(10)
  rows = squad.features(
    _record(context, impossible=True), tok, max_seq_length=13, doc_stride=4,
    max_query_length=64, train=True,
  )  # fmt: skip
  assert rows and all(r['start_positions'] == r['end_positions'] == 0 for r in rows)
  # The offset points at w3, whose text is not "w5": BERT drops it from training.
  bad = _record(context, answers=['w5'], starts=[context.index('w3')])
  settings = dict(max_seq_length=13, doc_stride=4, max_query_length=64)
  assert squad.features(bad, tok, train=True, **settings) == []
  kept = squad.features(bad, tok, train=False, **settings)
  assert kept and not any(r['answer_found'] for r in kept)


def test_features_are_deterministic(tok):
  context = _context(30)
  record = _record(context, answers=['w12'], starts=[context.index('w12')])
  settings = dict(max_seq_length=16, doc_stride=5, max_query_length=64, train=True)
  a, b = squad.features(record, tok, **settings), squad.features(record, tok, **settings)
  assert len(a) == len(b) > 2
  for x, y in zip(a, b, strict=True):
    assert all(np.array_equal(x[k], y[k]) for k in x)


SQUAD_V2 = {
  'version': 'v2.0',
  'data': [
    {
      'title': 'T',
      'paragraphs': [
        {
          'context': 'he was born in paris',
          'qas': [
            {
              'id': 'a',
              'question': 'where',
              'answers': [{'text': 'paris', 'answer_start': 15}],
              'is_impossible': False,
            },
            {
              'id': 'b',
              'question': 'when',
              'answers': [],
              'plausible_answers': [{'text': 'he', 'answer_start': 0}],
              'is_impossible': True,
            },
          ],
        }
      ],
    }
  ],
}


def test_read_squad_v1_and_v2(tmp_path):
  v1 = {'version': '1.1', 'data': json.loads(json.dumps(SQUAD_V2['data']))}
  del v1['data'][0]['paragraphs'][0]['qas'][1]
  del v1['data'][0]['paragraphs'][0]['qas'][0]['is_impossible']
  v1['data'][0]['paragraphs'][0]['qas'][0]['answers'].append(
    {'text': 'in paris', 'answer_start': 12}
  )
  for name, data in (('v1.json', v1), ('v2.json', SQUAD_V2)):
    (tmp_path / name).write_text(json.dumps(data))
  (a,) = squad.read_squad(str(tmp_path / 'v1.json'))
  assert a == {
    'id': 'a',
    'question': 'where',
    'context': 'he was born in paris',
    'answers': ['paris', 'in paris'],
    'answer_starts': [15, 12],
    'is_impossible': False,
    'idx': 0,
  }
  a, b = squad.read_squad(str(tmp_path / 'v2.json'))
  assert not a['is_impossible'] and a['answers'] == ['paris']
  assert b['is_impossible'] and b['answers'] == [] and b['answer_starts'] == [] and b['idx'] == 1
  bad = json.loads(json.dumps(SQUAD_V2))
  bad['data'][0]['paragraphs'][0]['qas'][0]['answers'][0]['answer_start'] = 17
  (tmp_path / 'bad.json').write_text(json.dumps(bad))
  with pytest.raises(ValueError, match="question 'a'"):
    squad.read_squad(str(tmp_path / 'bad.json'))


def test_from_tfds_example_v1_and_v2():
  example = {
    'id': b'x1',
    'title': b'T',
    'context': b'he was born in paris',
    'question': b'where',
    'answers': {'text': np.array([b'paris', b'paris']), 'answer_start': np.array([15, 15])},
  }
  record = squad.from_tfds_example(example, 3)
  assert record['id'] == 'x1' and record['idx'] == 3 and record['answers'] == ['paris', 'paris']
  assert record['answer_starts'] == [15, 15] and not record['is_impossible']
  empty = dict(example, answers={'text': np.array([], object), 'answer_start': np.array([], int)})
  assert squad.from_tfds_example(empty)['is_impossible']  # v2.0 without is_impossible
  flagged = dict(example, is_impossible=True)
  record = squad.from_tfds_example(flagged)
  assert record['is_impossible'] and record['answers'] == []


# ---------------------------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------------------------


def _maps(windows, length=8, doc=(2, 8), words=None, max_context=None):
  """token_to_word / max_context for `windows` rows whose document tokens are doc[0]:doc[1]."""
  token_to_word = np.full((windows, length), -1)
  for w in range(windows):
    token_to_word[w, doc[0] : doc[1]] = words[w] if words is not None else np.arange(6)
  if max_context is None:
    max_context = token_to_word >= 0
  return token_to_word, max_context


def test_postprocess_picks_the_best_valid_span():
  record = _record('a b c d e f')
  token_to_word, max_context = _maps(1)
  start, end = np.full((1, 8), -10.0), np.zeros((1, 8))
  start[0, 3], end[0, 5] = 5.0, 4.0  # words 1..3: "b c d"
  start[0, 0], end[0, 0] = 20.0, 20.0  # [CLS] is not a document token: ignored in the span.
  predictions, null = squad.postprocess([record], [(start, end)], [(token_to_word, max_context)])
  assert predictions == {'q0': 'b c d'} and null == {}
  # end < start is never chosen: the best end before the start loses to a later one.
  end[0, 2], end[0, 5] = 9.0, 1.0
  predictions, _ = squad.postprocess([record], [(start, end)], [(token_to_word, max_context)])
  assert predictions['q0'] == 'b c d'
  # max_answer_length=2 rules out the 3-token span; the best 2-token one starting at 3 is 3..4.
  end[0, 4] = 0.5
  predictions, _ = squad.postprocess(
    [record], [(start, end)], [(token_to_word, max_context)], max_answer_length=2
  )
  assert predictions['q0'] == 'b c'


def test_postprocess_scores_starts_only_where_the_window_has_max_context():
  record = _record('a b c d e f')
  # Two windows over words 0-5; window 0 has max context only for words 0-2.
  token_to_word, _ = _maps(2)
  max_context = np.zeros((2, 8), bool)
  max_context[0, 2:5], max_context[1, 5:8] = True, True
  start, end = np.full((2, 8), -10.0), np.full((2, 8), -10.0)
  start[0, 6], end[0, 7] = 10.0, 10.0  # "e f": the best logits, but word 4 is window 1's.
  start[1, 5], end[1, 6] = 3.0, 3.0  # "d e"
  predictions, _ = squad.postprocess([record], [(start, end)], [(token_to_word, max_context)])
  assert predictions['q0'] == 'd e'
  # With max context everywhere, window 0's span wins.
  everywhere = [(token_to_word, token_to_word >= 0)]
  assert squad.postprocess([record], [(start, end)], everywhere)[0]['q0'] == 'e f'


def test_postprocess_v2_null_score_is_the_minimum_over_windows():
  record = _record('a b c d e f')
  token_to_word, max_context = _maps(2)
  max_context[1] = False  # Window 0 scores every word.
  start, end = np.zeros((2, 8)), np.zeros((2, 8))
  start[:, 0], end[:, 0] = [4.0, 1.5], [1.0, 1.0]  # null: min(5.0, 2.5) = 2.5
  start[0, 4], end[0, 4] = 1.0, 0.5  # best span "c": 1.5
  predictions, null = squad.postprocess(
    [record], [(start, end)], [(token_to_word, max_context)], version_2=True
  )
  assert predictions == {'q0': 'c'} and null == {'q0': pytest.approx(1.0)}
  # No valid span at all (n_best_size=1 picks [CLS] start and end only): '' and +inf.
  predictions, null = squad.postprocess(
    [record], [(start, end)], [(token_to_word, max_context)], version_2=True, n_best_size=1
  )
  assert predictions == {'q0': ''} and null['q0'] == float('inf')
