"""Task metrics against hand-computed values, including the degenerate cases benchmarks hit."""

import math

import numpy as np
import pytest
import scipy.stats

from evaluation import task_metrics as tm

# --- GLUE: classification and regression. -------------------------------------------------------


def test_accuracy():
  assert tm.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
  with pytest.raises(ValueError):
    tm.accuracy([1, 0], [1])
  with pytest.raises(ValueError):
    tm.accuracy([], [])


def test_matthews_binary_by_hand():
  # tp=2, fp=1, tn=2, fn=1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3.
  predictions, labels = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
  assert tm.matthews_corrcoef(predictions, labels) == pytest.approx(1 / 3)
  assert tm.matthews_corrcoef(labels, labels) == pytest.approx(1.0)
  assert tm.matthews_corrcoef([1 - y for y in labels], labels) == pytest.approx(-1.0)


def test_matthews_constant_is_zero():
  labels = [1, 0, 0, 0, 1, 1]
  assert tm.matthews_corrcoef([1] * 6, labels) == 0.0  # Constant predictor, as sklearn.
  assert tm.matthews_corrcoef(labels, [0] * 6) == 0.0  # Constant labels.


def test_matthews_multiclass_by_hand():
  # AX has 3 classes. Confusion [true, pred] = [[1,1,0],[0,2,0],[1,0,1]]: trace 4, total 6,
  # true counts (2,2,2), pred counts (2,3,1): (4*6 - 12) / sqrt((36-14)(36-12)) = 12/sqrt(528).
  # An average of one-vs-rest binary MCCs would give another number.
  value = tm.matthews_corrcoef([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2])
  assert value == pytest.approx(12 / math.sqrt(22 * 24))


def test_f1_binary_by_hand():
  predictions, labels = [1, 1, 1, 0], [1, 1, 0, 0]
  # Positive 1: tp=2, P=2/3, R=1 -> 0.8. Positive 0: tp=1, P=1, R=1/2 -> 2/3.
  assert tm.f1_binary(predictions, labels) == pytest.approx(0.8)
  assert tm.f1_binary(predictions, labels, positive=0) == pytest.approx(2 / 3)
  assert tm.f1_binary([0, 0], [0, 0]) == 0.0  # No positives anywhere: sklearn's 0.


def test_pearson_by_hand():
  # Deviations (-1.5,-.5,.5,1.5) and (-3,-1,0,4): 11 / sqrt(5 * 26).
  assert tm.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
  assert math.isnan(tm.pearson([1, 1, 1], [1, 2, 3]))


def test_average_ranks():
  np.testing.assert_array_equal(tm.average_ranks([10, 20, 10, 30, 20, 20]), [1.5, 4, 1.5, 6, 4, 4])


def test_spearman_ties_by_hand():
  # Ranks of x with a tie: (1, 2.5, 2.5, 4); y: (1, 3, 2, 4). Pearson of the ranks:
  # 4.5 / sqrt(4.5 * 5) = 3/sqrt(10) = 0.94868. The no-ties shortcut 1 - 6 sum d^2 / (n(n^2-1))
  # gives 0.95 and ordinal (tie-broken) ranks give 0.8: both would fail here.
  assert tm.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)


def test_spearman_matches_scipy_with_many_ties():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 6, 200) / 5.0  # STS-B-like labels, many ties.
  y = x + rng.normal(0, 0.3, 200).round(1)
  assert tm.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
  assert tm.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)


def test_glue_metrics_per_task():
  predictions, labels = [1, 1, 1, 0], [1, 1, 0, 0]
  assert tm.glue_metrics('cola', predictions, labels) == {
    'mcc': pytest.approx(2 / math.sqrt(3 * 2 * 1 * 2))  # (2*1 - 1*0) / sqrt(3*2*1*2)
  }
  for task in ('sst2', 'qnli', 'rte', 'wnli', 'mnli_matched', 'mnli_mismatched'):
    assert tm.glue_metrics(task, predictions, labels) == {'accuracy': 0.75}
  assert set(tm.glue_metrics('ax', [0, 1, 2], [0, 1, 2])) == {'mcc'}
  for task in ('mrpc', 'qqp'):
    assert tm.glue_metrics(task, predictions, labels) == pytest.approx(
      {'f1': 0.8, 'accuracy': 0.75, 'f1_acc': 0.775}
    )
  stsb = tm.glue_metrics('stsb', [1, 2, 2, 3], [1, 3, 2, 4])
  assert stsb['spearman'] == pytest.approx(3 / math.sqrt(10))
  assert stsb['corr'] == pytest.approx((stsb['pearson'] + stsb['spearman']) / 2)
  with pytest.raises(ValueError):
    tm.glue_metrics('sst-2', predictions, labels)


# --- SQuAD. -------------------------------------------------------------------------------------


def test_normalize_answer():
  assert tm.normalize_answer('  The Quick,  brown FOX! ') == 'quick brown fox'
  assert tm.normalize_answer('An apple a day') == 'apple day'
  assert tm.normalize_answer('theatre') == 'theatre'  # Articles only as whole words.
  assert tm.normalize_answer('the-end') == 'theend'  # Punctuation goes first.


def test_exact_match_and_f1_by_hand():
  assert tm.exact_match('the Eiffel Tower.', ['Paris', 'Eiffel tower']) == 1.0
  assert tm.exact_match('Eiffel', ['Eiffel tower']) == 0.0
  # Tokens (big, red, dog) vs (red, dog, barked): overlap 2, P = R = 2/3.
  assert tm.f1('the big red dog', ['a red dog barked']) == pytest.approx(2 / 3)
  # Max over truths: against (red, dog) P = 2/3, R = 1 -> 0.8.
  assert tm.f1('the big red dog', ['cat', 'red dog', 'a red dog barked']) == pytest.approx(0.8)
  # Overlap counts repeated tokens up to the smaller count: (dog, dog) vs (dog, dog, cat)
  # overlap 2, P = 1, R = 2/3 -> 0.8 (a set overlap would give 1, P = 1/2, R = 1/3 -> 0.4);
  # one gold 'dog' matches one predicted 'dog' only: P = 1/3, R = 1 -> 0.5.
  assert tm.f1('dog dog', ['dog dog cat']) == pytest.approx(0.8)
  assert tm.f1('dog dog dog', ['dog']) == pytest.approx(0.5)


def test_squad_empty_answers():
  # No answer against a real answer: 0. No answer against an unanswerable question: 1.
  assert tm.f1('', ['Paris']) == 0.0 and tm.exact_match('', ['Paris']) == 0.0
  for unanswerable in ([], ['']):
    assert tm.f1('', unanswerable) == 1.0 and tm.exact_match('', unanswerable) == 1.0
    assert tm.f1('Paris', unanswerable) == 0.0 and tm.exact_match('Paris', unanswerable) == 0.0
  # A gold answer that normalizes to '' is dropped (evaluate-v2.0), so '' does not match it.
  assert tm.f1('', ['the', 'Paris']) == 0.0


def test_squad_scores_by_hand():
  dataset = {'q1': ['Paris'], 'q2': ['red dog'], 'q3': [], 'q4': ['x']}
  predictions = {'q1': 'paris', 'q2': 'big red dog', 'q3': ''}  # q4 missing: scores 0.
  # EM 1 + 0 + 1 + 0, F1 1 + 0.8 + 1 + 0, over 4 questions, in percent.
  assert tm.squad_scores(predictions, dataset) == pytest.approx({'exact_match': 50.0, 'f1': 70.0})
  # q2's no-answer score is above the threshold, so it is answered '' and scores 0.
  no_answer = {'q1': -1.0, 'q2': 2.0, 'q3': 3.0}
  assert tm.squad_scores(predictions, dataset, no_answer, threshold=0.0) == pytest.approx(
    {'exact_match': 50.0, 'f1': 50.0}
  )


def _threshold_case():
  dataset = {'q1': ['Paris'], 'q2': [], 'q3': ['red dog'], 'q4': [], 'q5': ['x']}
  predictions = {'q1': 'Paris', 'q2': 'foo', 'q3': 'dog', 'q4': 'bar', 'q5': 'x'}
  # q3: EM 0, F1 2/3 (P=1, R=1/2).
  no_answer = {'q1': -2.0, 'q3': -1.0, 'q2': 0.5, 'q5': 1.0, 'q4': 2.0}
  return predictions, dataset, no_answer


def test_best_thresholds_by_hand():
  predictions, dataset, no_answer = _threshold_case()
  # All '' first: 2 right (q2, q4). Sweep q1 (+1) q3 (+0 | +2/3) q2 (-1) q5 (+1) q4 (-1):
  # EM 2 -> 3 -> 3 -> 2 -> 3 -> 2, best 3 at -2 (a later tie does not replace it);
  # F1 2 -> 3 -> 3.667 -> 2.667 -> 3.667 -> 2.667, best 3.667 at -1.
  best = tm.best_thresholds(predictions, dataset, no_answer)
  assert best == pytest.approx(
    {
      'best_exact_match': 60.0,
      'best_exact_match_threshold': -2.0,
      'best_f1': 100 * (11 / 3) / 5,
      'best_f1_threshold': -1.0,
    }
  )
  # Each returned threshold reproduces its score through squad_scores.
  at_exact = tm.squad_scores(predictions, dataset, no_answer, best['best_exact_match_threshold'])
  at_f1 = tm.squad_scores(predictions, dataset, no_answer, best['best_f1_threshold'])
  assert at_exact['exact_match'] == pytest.approx(best['best_exact_match'])
  assert at_f1['f1'] == pytest.approx(best['best_f1'])


def test_best_thresholds_is_the_best_threshold():
  # With distinct scores the sweep must equal a brute-force search over every threshold.
  rng = np.random.default_rng(1)
  words = ['red', 'dog', 'big', 'cat']
  dataset, predictions, no_answer = {}, {}, {}
  for i in range(40):
    qid = f'q{i}'
    dataset[qid] = [] if rng.random() < 0.4 else [' '.join(rng.choice(words, 2))]
    predictions[qid] = ' '.join(rng.choice(words, int(rng.integers(1, 3))))
    no_answer[qid] = float(rng.normal())
  best = tm.best_thresholds(predictions, dataset, no_answer)
  candidates = [min(no_answer.values()) - 1.0, *no_answer.values()]
  sweep = [tm.squad_scores(predictions, dataset, no_answer, t) for t in candidates]
  assert best['best_exact_match'] == pytest.approx(max(s['exact_match'] for s in sweep))
  assert best['best_f1'] == pytest.approx(max(s['f1'] for s in sweep))


def test_best_thresholds_answering_nothing():
  # Every prediction wrong: answering nothing is best, reported at the official initial 0.0.
  best = tm.best_thresholds(
    {'q1': 'cat', 'q2': 'foo'}, {'q1': ['dog'], 'q2': []}, {'q1': 5.0, 'q2': 7.0}
  )
  assert best['best_exact_match'] == 50.0 and best['best_exact_match_threshold'] == 0.0
  with pytest.raises(ValueError):
    tm.best_thresholds({'q1': 'cat'}, {'q1': ['dog'], 'q2': []}, {'q1': 5.0, 'q2': 7.0})


# --- NER (conlleval). ---------------------------------------------------------------------------


def test_conll_entities_chunk_rules():
  # Entity at the sentence end.
  assert tm.conll_entities(['B-PER', 'I-PER', 'O', 'B-LOC']) == {('PER', 0, 2), ('LOC', 3, 4)}
  # I- with no B- starts a chunk, also first in the sentence.
  assert tm.conll_entities(['O', 'I-PER', 'I-PER', 'O']) == {('PER', 1, 3)}
  assert tm.conll_entities(['I-LOC', 'I-LOC']) == {('LOC', 0, 2)}
  # A type change inside a run splits it.
  assert tm.conll_entities(['B-PER', 'I-LOC', 'I-LOC']) == {('PER', 0, 1), ('LOC', 1, 3)}
  # B- always starts a new chunk, even of the same type.
  assert tm.conll_entities(['B-PER', 'I-PER', 'B-PER']) == {('PER', 0, 2), ('PER', 2, 3)}
  assert tm.conll_entities(['B-ORG', 'B-ORG']) == {('ORG', 0, 1), ('ORG', 1, 2)}
  assert tm.conll_entities(['O', 'O']) == set() and tm.conll_entities([]) == set()
  with pytest.raises(ValueError):
    tm.conll_entities(['E-PER'])


def test_entity_f1_by_hand():
  true = [['B-PER', 'I-PER', 'O', 'B-LOC'], ['B-ORG', 'O'], ['B-PER']]
  pred = [['B-PER', 'O', 'O', 'B-LOC'], ['B-ORG', 'O'], ['B-MISC']]
  # Gold PER(0,2) LOC ORG PER(0,1); predicted PER(0,1) LOC ORG MISC: LOC and ORG right.
  scores = tm.entity_f1(true, pred)
  assert scores['precision'] == pytest.approx(0.5) and scores['recall'] == pytest.approx(0.5)
  assert scores['f1'] == pytest.approx(0.5)
  assert (scores['true_entities'], scores['pred_entities'], scores['correct']) == (4, 4, 2)
  per_type = scores['per_type']
  assert sorted(per_type) == ['LOC', 'MISC', 'ORG', 'PER']
  assert per_type['PER']['f1'] == 0.0 and per_type['PER']['true_entities'] == 2
  assert per_type['MISC']['pred_entities'] == 1 and per_type['MISC']['recall'] == 0.0
  assert per_type['LOC']['f1'] == 1.0


def test_entity_f1_sentences_are_separate():
  # The same (type, start, end) in another sentence is not a match.
  scores = tm.entity_f1([['B-PER'], ['O']], [['O'], ['B-PER']])
  assert scores['correct'] == 0 and scores['f1'] == 0.0
  # Precision, recall and F1 over all sentences, not averaged per sentence:
  # 1 right of 1 predicted, 1 of 3 gold -> P 1, R 1/3, F1 0.5.
  scores = tm.entity_f1([['B-A'], ['B-A', 'B-A']], [['B-A'], ['O', 'O']])
  summary = {key: scores[key] for key in ('precision', 'recall', 'f1')}
  assert summary == pytest.approx({'precision': 1.0, 'recall': 1 / 3, 'f1': 0.5})
  with pytest.raises(ValueError):
    tm.entity_f1([['O']], [['O', 'O']])
