"""Task metrics for fine-tuning evaluation: GLUE, SQuAD v1.1/v2.0 and CoNLL NER.

Pure NumPy/Python, computed on the host over a whole evaluation set (no jax). Each metric follows
the reference its benchmark reports with:

- GLUE: the official per-task metrics (MCC for CoLA and AX, F1 and accuracy for MRPC/QQP,
  Pearson/Spearman for STS-B, accuracy otherwise), as fractions, not percentages.
- SQuAD: the rules of the official evaluate-v1.1.py / evaluate-v2.0.py scripts (answer
  normalization, max over gold answers, the no-answer threshold search), in percent as they print.
- NER: conlleval's chunk rules and entity-level precision/recall/F1, as fractions.
"""

import collections
import re
import string
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from data import conll, squad

# ---------------------------------------------------------------------------------------------
# Classification and regression (GLUE).
# ---------------------------------------------------------------------------------------------


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
  """Both inputs as 1-D arrays of the same, non-zero length."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.ndim != 1 or predictions.shape != labels.shape:
    raise ValueError(
      f'expected two 1-D arrays of one length, got {predictions.shape}, {labels.shape}'
    )
  if predictions.size == 0:
    raise ValueError('metrics of an empty evaluation set are undefined')
  return predictions, labels


def accuracy(predictions, labels) -> float:
  """Fraction of predictions equal to their label.

  Args:
    predictions: predicted class ids, shape [examples].
    labels: gold class ids, shape [examples].

  Returns:
    Accuracy in [0, 1].
  """
  predictions, labels = _pair(predictions, labels)
  return float(np.mean(predictions == labels))


def matthews_corrcoef(predictions, labels) -> float:
  """Matthews correlation coefficient, multiclass (Gorodkin's R_K) as sklearn computes it.

  Binary for CoLA; AX has three classes, which the same confusion-matrix formula covers.
  A constant predictor (or constant labels) makes the denominator zero; like sklearn, it
  scores 0.0 rather than NaN.

  Args:
    predictions: predicted class ids, shape [examples].
    labels: gold class ids, shape [examples].

  Returns:
    MCC in [-1, 1].
  """
  predictions, labels = _pair(predictions, labels)
  classes, index = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
  true_index, pred_index = index[: labels.size], index[labels.size :]
  confusion = np.zeros((classes.size, classes.size), np.float64)  # [true, predicted]
  np.add.at(confusion, (true_index, pred_index), 1.0)
  true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)  # [classes]
  correct, total = np.trace(confusion), confusion.sum()
  covariance = correct * total - pred_counts @ true_counts
  variance_pred = total**2 - pred_counts @ pred_counts
  variance_true = total**2 - true_counts @ true_counts
  if variance_pred == 0 or variance_true == 0:
    return 0.0
  return float(covariance / np.sqrt(variance_pred * variance_true))


def f1_binary(predictions, labels, positive=1) -> float:
  """F1 of the positive class (MRPC and QQP report it for label 1, 'equivalent').

  Args:
    predictions: predicted class ids, shape [examples].
    labels: gold class ids, shape [examples].
    positive: the label treated as positive.

  Returns:
    F1 in [0, 1]; 0.0 when there are neither predicted nor gold positives (sklearn's
    zero_division default).
  """
  predictions, labels = _pair(predictions, labels)
  predicted, actual = predictions == positive, labels == positive
  true_positives = np.sum(predicted & actual)
  # 2PR / (P + R) with P = tp / predicted, R = tp / actual, written without the two divisions.
  denominator = predicted.sum() + actual.sum()
  return float(2 * true_positives / denominator) if denominator else 0.0


def pearson(x, y) -> float:
  """Pearson correlation coefficient.

  Args:
    x: values, shape [examples].
    y: values, shape [examples].

  Returns:
    Correlation in [-1, 1]; NaN if either input is constant (undefined, as in scipy).
  """
  x, y = _pair(x, y)
  x = x.astype(np.float64) - np.mean(x)
  y = y.astype(np.float64) - np.mean(y)
  norm = np.sqrt((x @ x) * (y @ y))
  if norm == 0:
    return float('nan')
  # Clip: rounding can put a perfect correlation a hair outside [-1, 1].
  return float(np.clip((x @ y) / norm, -1.0, 1.0))


def average_ranks(values) -> np.ndarray:
  """1-based ranks with ties given the mean of the ranks they span (scipy's rankdata 'average').

  Args:
    values: shape [examples].

  Returns:
    float64 ranks, shape [examples].
  """
  values = np.asarray(values)
  order = np.argsort(values, kind='stable')
  sorted_values = values[order]
  # A tie group starts wherever the sorted value changes; every member gets the mean of the
  # group's first and last ordinal rank.
  starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
  ends = np.r_[starts[1:], values.size]  # exclusive
  group_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(values.size, np.float64)
  ranks[order] = np.repeat(group_rank, ends - starts)
  return ranks


def spearman(x, y) -> float:
  """Spearman rank correlation: Pearson correlation of the average ranks.

  The shortcut 1 - 6 sum d^2 / (n (n^2 - 1)) is exact only without ties; STS-B predictions and
  labels (multiples of 0.2) do tie, so this ranks with averages and correlates the ranks.

  Args:
    x: values, shape [examples].
    y: values, shape [examples].

  Returns:
    Correlation in [-1, 1]; NaN if either input is constant.
  """
  x, y = _pair(x, y)
  return pearson(average_ranks(x), average_ranks(y))


_ACCURACY_TASKS = ('sst2', 'qnli', 'rte', 'wnli', 'mnli', 'mnli_matched', 'mnli_mismatched')


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
  """The official GLUE metrics of one task.

  Args:
    task: 'cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli' (or 'mnli_matched', 'mnli_mismatched'),
      'qnli', 'rte', 'wnli' or 'ax'.
    predictions: class ids, or scores for 'stsb', shape [examples].
    labels: gold class ids or scores, shape [examples].

  Returns:
    cola, ax: {'mcc'}; mrpc, qqp: {'f1', 'accuracy', 'f1_acc'} (f1_acc their mean, the single
    number the leaderboard averages); stsb: {'pearson', 'spearman', 'corr'} (corr their mean);
    the rest: {'accuracy'}. Fractions, not percentages.
  """
  if task in ('cola', 'ax'):
    return {'mcc': matthews_corrcoef(predictions, labels)}
  if task in _ACCURACY_TASKS:
    return {'accuracy': accuracy(predictions, labels)}
  if task in ('mrpc', 'qqp'):
    f1_score, acc = f1_binary(predictions, labels), accuracy(predictions, labels)
    return {'f1': f1_score, 'accuracy': acc, 'f1_acc': (f1_score + acc) / 2}
  if task == 'stsb':
    pearson_r, spearman_r = pearson(predictions, labels), spearman(predictions, labels)
    return {'pearson': pearson_r, 'spearman': spearman_r, 'corr': (pearson_r + spearman_r) / 2}
  raise ValueError(f'unknown GLUE task {task!r}')


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0.
# ---------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r'\b(a|an|the)\b')
_PUNCTUATION = str.maketrans('', '', string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD answer normalization: lower case, drop ASCII punctuation and articles, squeeze spaces.

  The order matters and is the official one: punctuation goes before articles, so "the-end"
  becomes "theend" (no article left), not "end".
  """
  text = text.lower().translate(_PUNCTUATION)
  return ' '.join(_ARTICLES.sub(' ', text).split())


def _gold(truths: Iterable[str]) -> list[str]:
  """Gold answers as evaluate-v2.0 sees them: ones that normalize to '' dropped, [''] if none."""
  answers = [truth for truth in truths if normalize_answer(truth)]
  return answers or ['']


def _exact(prediction: str, truth: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(truth))


def _f1(prediction: str, truth: str) -> float:
  """Token-bag F1 of one prediction against one gold answer."""
  pred_tokens = normalize_answer(prediction).split()
  true_tokens = normalize_answer(truth).split()
  if not pred_tokens or not true_tokens:
    # v2.0: an empty answer (no-answer) is right only against an empty answer.
    return float(pred_tokens == true_tokens)
  overlap = sum((collections.Counter(pred_tokens) & collections.Counter(true_tokens)).values())
  if overlap == 0:
    return 0.0
  precision, recall = overlap / len(pred_tokens), overlap / len(true_tokens)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, truths: Iterable[str]) -> float:
  """1.0 if the normalized prediction equals any normalized gold answer, else 0.0.

  Args:
    prediction: the predicted answer text ('' for no answer).
    truths: the gold answer texts; [] or [''] for an unanswerable (v2.0) question.
  """
  return max(_exact(prediction, truth) for truth in _gold(truths))


def f1(prediction: str, truths: Iterable[str]) -> float:
  """Best token-overlap F1 of the prediction over the gold answers, in [0, 1].

  Args:
    prediction: the predicted answer text ('' for no answer).
    truths: the gold answer texts; [] or [''] for an unanswerable (v2.0) question.
  """
  return max(_f1(prediction, truth) for truth in _gold(truths))


def squad_scores(
  predictions: Mapping[str, str],
  dataset: Mapping[str, Sequence[str]],
  no_answer_scores: Mapping[str, float] | None = None,
  threshold: float = 0.0,
) -> dict[str, float]:
  """Corpus exact match and F1 in percent, as the official SQuAD scripts print them.

  Args:
    predictions: question id -> predicted answer text ('' for no answer).
    dataset: question id -> gold answer texts ([] or [''] if unanswerable).
    no_answer_scores: optional question id -> score_null - best_non_null; a question whose score
      is above `threshold` is answered '' whatever its prediction (evaluate-v2.0's
      apply_no_ans_threshold).
    threshold: the no-answer threshold, used only with no_answer_scores.

  Returns:
    {'exact_match', 'f1'} in [0, 100], averaged over every question of the dataset. A question
    with no prediction scores 0 (evaluate-v1.1's rule; v2.0 would leave it out of the mean).
  """
  if not dataset:
    raise ValueError('empty SQuAD dataset')
  total_exact = total_f1 = 0.0
  for qid, truths in dataset.items():
    if qid not in predictions:
      continue
    prediction = predictions[qid]
    if no_answer_scores is not None and no_answer_scores[qid] > threshold:
      prediction = ''
    total_exact += exact_match(prediction, truths)
    total_f1 += f1(prediction, truths)
  return {
    'exact_match': 100.0 * total_exact / len(dataset),
    'f1': 100.0 * total_f1 / len(dataset),
  }


# CMRC 2018 (Cui et al. 2019): character-level exact match and F1 over mixed segments.
_CMRC_PUNCTUATION = set(string.punctuation) | set(
  '，。：；？！、“”‘’《》〈〉「」『』（）【】〔〕…—－～·　'
)


def cmrc_segments(text: str) -> list[str]:
  """CMRC's mixed segmentation: lower case, punctuation dropped, every CJK character a
  segment and every run of other characters (a Latin word, a number) one segment."""
  segments, run = [], ''
  for ch in str(text).lower().strip():
    if ch in _CMRC_PUNCTUATION or ch.isspace() or squad.is_cjk(ch):
      if run:
        segments.append(run)
        run = ''
      if squad.is_cjk(ch):
        segments.append(ch)
    else:
      run += ch
  if run:
    segments.append(run)
  return segments


def _longest_common_run(a: list[str], b: list[str]) -> int:
  """Length of the longest contiguous run of segments `a` and `b` share."""
  best, previous = 0, [0] * (len(b) + 1)
  for x in a:
    current = [0] * (len(b) + 1)
    for j, y in enumerate(b, 1):
      if x == y:
        current[j] = previous[j - 1] + 1
        best = max(best, current[j])
    previous = current
  return best


def _without_punctuation(text: str) -> str:
  return ''.join(c for c in str(text).lower() if c not in _CMRC_PUNCTUATION and not c.isspace())


def cmrc_exact(prediction: str, truths: Iterable[str]) -> float:
  """1.0 if the prediction, punctuation and spaces dropped, equals a gold answer so."""
  return float(any(_without_punctuation(prediction) == _without_punctuation(t) for t in truths))


def cmrc_f1(prediction: str, truths: Iterable[str]) -> float:
  """Best F1 over the gold answers of the longest common run of segments (precision over
  the prediction's segments, recall over the answer's): CMRC 2018's F1."""
  predicted = cmrc_segments(prediction)
  best = 0.0
  for truth in truths:
    gold = cmrc_segments(truth)
    common = _longest_common_run(predicted, gold)
    if common:
      precision, recall = common / len(predicted), common / len(gold)
      best = max(best, 2 * precision * recall / (precision + recall))
  return best


def cmrc_scores(predictions: Mapping[str, str], dataset: Mapping[str, Sequence[str]]) -> dict:
  """Corpus exact match and F1 in percent over every question (unpredicted ones score 0)."""
  if not dataset:
    raise ValueError('empty CMRC dataset')
  exact = sum(cmrc_exact(predictions[q], t) for q, t in dataset.items() if q in predictions)
  f1_sum = sum(cmrc_f1(predictions[q], t) for q, t in dataset.items() if q in predictions)
  return {'exact_match': 100.0 * exact / len(dataset), 'f1': 100.0 * f1_sum / len(dataset)}


def _best_threshold(
  raw_scores: Mapping[str, float],
  predictions: Mapping[str, str],
  no_answer_scores: Mapping[str, float],
  has_answer: Mapping[str, bool],
) -> tuple[float, float]:
  """The sweep of evaluate-v2.0's find_best_thresh for one metric; (best percent, threshold)."""
  # Start with every question answered '' (threshold below every score): exactly the
  # unanswerable ones are right. Then lower no-answer scores first, switch one question at a
  # time to its own prediction: an answerable one gains its raw score (it had 0 for ''), an
  # unanswerable one loses its point if the prediction is not ''.
  score = best = float(sum(not answerable for answerable in has_answer.values()))
  best_threshold = 0.0  # The official initial value, also when answering nothing is best.
  for qid in sorted(no_answer_scores, key=no_answer_scores.__getitem__):
    if has_answer[qid]:
      score += raw_scores[qid]
    elif predictions[qid]:
      score -= 1.0
    # Strict '>', and the sweep may stop inside a run of tied scores: both as the official script.
    if score > best:
      best, best_threshold = score, no_answer_scores[qid]
  return 100.0 * best / len(raw_scores), best_threshold


def best_thresholds(
  predictions: Mapping[str, str],
  dataset: Mapping[str, Sequence[str]],
  no_answer_scores: Mapping[str, float],
) -> dict[str, float]:
  """Best no-answer thresholds for exact match and F1, as evaluate-v2.0's find_best_thresh.

  A question is answered '' when its no-answer score is above the threshold. The search tries
  each question's own score as the threshold; use the returned threshold with squad_scores.

  Args:
    predictions: question id -> best non-null answer text (the prediction before thresholding).
    dataset: question id -> gold answer texts ([] or [''] if unanswerable).
    no_answer_scores: question id -> score_null - best_non_null (higher: more likely no answer).

  Returns:
    {'best_exact_match', 'best_exact_match_threshold', 'best_f1', 'best_f1_threshold'}, scores
    in [0, 100].
  """
  missing = set(dataset) - set(predictions) | set(dataset) - set(no_answer_scores)
  if not dataset or missing:
    raise ValueError(f'need a prediction and a no-answer score per question; missing {missing}')
  scores = {qid: no_answer_scores[qid] for qid in dataset}
  has_answer = {qid: _gold(truths) != [''] for qid, truths in dataset.items()}
  exact = {qid: exact_match(predictions[qid], truths) for qid, truths in dataset.items()}
  overlap = {qid: f1(predictions[qid], truths) for qid, truths in dataset.items()}
  best_exact, exact_threshold = _best_threshold(exact, predictions, scores, has_answer)
  best_f1, f1_threshold = _best_threshold(overlap, predictions, scores, has_answer)
  return {
    'best_exact_match': best_exact,
    'best_exact_match_threshold': exact_threshold,
    'best_f1': best_f1,
    'best_f1_threshold': f1_threshold,
  }


# ---------------------------------------------------------------------------------------------
# Named entity recognition (conlleval).
# ---------------------------------------------------------------------------------------------


# conlleval's chunk rules live with the CoNLL reader (an objective decodes with them too).
conll_entities = conll.entity_chunks


def _prf(correct: int, predicted: int, actual: int) -> dict[str, float]:
  """conlleval's precision, recall and F1 (each 0 when undefined), as fractions."""
  precision = correct / predicted if predicted else 0.0
  recall = correct / actual if actual else 0.0
  f1_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'precision': precision, 'recall': recall, 'f1': f1_score}


def entity_f1(
  true_sequences: Sequence[Sequence[str]], pred_sequences: Sequence[Sequence[str]]
) -> dict:
  """Entity-level precision, recall and F1 over a corpus, as conlleval (in fractions).

  An entity is correct only if the prediction has one of the same type with the same start and
  end in the same sentence. Chunks never cross sentences.

  Args:
    true_sequences: gold BIO tags per sentence.
    pred_sequences: predicted BIO tags per sentence, each as long as its gold sentence.

  Returns:
    {'precision', 'recall', 'f1', 'true_entities', 'pred_entities', 'correct', 'per_type'}, where
    per_type maps each type seen in gold or predictions to its own
    {'precision', 'recall', 'f1', 'true_entities', 'pred_entities', 'correct'}.
  """
  if len(true_sequences) != len(pred_sequences):
    raise ValueError(f'{len(true_sequences)} gold sentences but {len(pred_sequences)} predicted')
  counts = collections.defaultdict(lambda: np.zeros(3, np.int64))  # type -> [correct, pred, true]
  for sentence, (true_tags, pred_tags) in enumerate(
    zip(true_sequences, pred_sequences, strict=True)
  ):
    if len(true_tags) != len(pred_tags):
      raise ValueError(
        f'sentence {sentence}: {len(true_tags)} gold tags, {len(pred_tags)} predicted'
      )
    true_entities, pred_entities = conll_entities(true_tags), conll_entities(pred_tags)
    for kind, *_ in true_entities & pred_entities:
      counts[kind][0] += 1
    for kind, *_ in pred_entities:
      counts[kind][1] += 1
    for kind, *_ in true_entities:
      counts[kind][2] += 1

  def summary(correct, predicted, actual):
    return _prf(correct, predicted, actual) | {
      'true_entities': int(actual),
      'pred_entities': int(predicted),
      'correct': int(correct),
    }

  total = sum(counts.values(), np.zeros(3, np.int64))
  result = summary(*total)
  result['per_type'] = {kind: summary(*counts[kind]) for kind in sorted(counts)}
  return result
