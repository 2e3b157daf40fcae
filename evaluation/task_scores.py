"""Scores a task objective's decoded predictions with its benchmark's metrics.

A task objective turns its rows' outputs into per-example predictions
(`decode_predictions`, objectives/api.py) and names the scorer in their 'metric' entry;
`score` computes that benchmark's metrics (evaluation/task_metrics.py) and the column the
results table reports:

  'glue'      {'task', 'predictions', 'labels'}: the task's official GLUE metrics; the
              score is the metric BERT's Table 1 prints for the task (MCC for CoLA, F1
              for MRPC and QQP, Spearman for STS-B, accuracy otherwise), column `task`.
  'accuracy'  {'task', 'predictions', 'labels'}: accuracy, column `task` (CLUE tasks).
  'conll'     {'gold', 'predicted'} word tags per sentence: conlleval's entity-level
              precision, recall and F1 and the token accuracy; column 'conll_f1'.
  'squad'     {'version_2', 'predictions', 'no_answer', 'answers', 'coverage'}: the official
              SQuAD scripts' exact match and F1; v2.0 also at the best thresholds.
  'cmrc'      the same entries: CMRC 2018's character-level exact match and F1 (mixed
              segments: each CJK character, each Latin word or number); columns cmrc_em, cmrc_f1.

Every figure is a fraction (SQuAD's percentages are divided by 100).
"""

from evaluation import task_metrics

# The metric BERT's Table 1 prints per GLUE task (the reference column's); accuracy otherwise.
_GLUE_TABLE_METRIC = {'cola': 'mcc', 'ax': 'mcc', 'mrpc': 'f1', 'qqp': 'f1', 'stsb': 'spearman'}


def _glue(decoded: dict) -> dict:
  task = decoded['task']
  metrics = task_metrics.glue_metrics(task, decoded['predictions'], decoded['labels'])
  return {'metrics': metrics, 'scores': {task: metrics[_GLUE_TABLE_METRIC.get(task, 'accuracy')]}}


def _accuracy(decoded: dict) -> dict:
  value = task_metrics.accuracy(decoded['predictions'], decoded['labels'])
  return {'metrics': {'accuracy': value}, 'scores': {decoded['task']: value}}


def _conll(decoded: dict) -> dict:
  gold, guess = decoded['gold'], decoded['predicted']
  scores = task_metrics.entity_f1(gold, guess)
  right = sum(
    g == p for gs, ps in zip(gold, guess, strict=True) for g, p in zip(gs, ps, strict=True)
  )
  words = sum(len(g) for g in gold)
  return {
    'metrics': {
      'precision': float(scores['precision']),
      'recall': float(scores['recall']),
      'f1': float(scores['f1']),
      'token_accuracy': right / words if words else 0.0,
    },
    'scores': {'conll_f1': float(scores['f1'])},
  }


def _squad(decoded: dict) -> dict:
  """v1.1: metrics exact, f1; scores squad_em, squad_f1. v2.0: metrics exact, f1 at BERT's
  default threshold 0, best_exact, best_f1 and their thresholds (evaluate-v2.0's sweep),
  has_ans_* / no_ans_* at the best-F1 threshold; scores squad2_em, squad2_f1 at the best-F1
  threshold (BERT's README reruns prediction with it). metrics['coverage'] is the fraction
  of questions predicted."""
  predictions, dataset, coverage = decoded['predictions'], decoded['answers'], decoded['coverage']
  if not decoded['version_2']:
    scores = task_metrics.squad_scores(predictions, dataset)
    em, f1 = scores['exact_match'] / 100, scores['f1'] / 100
    return {
      'metrics': {'exact': em, 'f1': f1, 'coverage': coverage},
      'scores': {'squad_em': em, 'squad_f1': f1},
    }
  no_answer = decoded['no_answer']
  default = task_metrics.squad_scores(predictions, dataset, no_answer, threshold=0.0)
  best = task_metrics.best_thresholds(predictions, dataset, no_answer)
  threshold = best['best_f1_threshold']
  tuned = task_metrics.squad_scores(predictions, dataset, no_answer, threshold=threshold)
  metrics = {
    'exact': default['exact_match'] / 100,
    'f1': default['f1'] / 100,
    'best_exact': best['best_exact_match'] / 100,
    'best_exact_threshold': best['best_exact_match_threshold'],
    'best_f1': best['best_f1'] / 100,
    'best_f1_threshold': threshold,
    'coverage': coverage,
  }
  for name, answerable in (('has_ans', True), ('no_ans', False)):
    subset = {qid: truths for qid, truths in dataset.items() if bool(truths) == answerable}
    if subset:
      part = task_metrics.squad_scores(predictions, subset, no_answer, threshold=threshold)
      metrics[f'{name}_exact'], metrics[f'{name}_f1'] = part['exact_match'] / 100, part['f1'] / 100
  return {
    'metrics': metrics,
    'scores': {'squad2_em': tuned['exact_match'] / 100, 'squad2_f1': best['best_f1'] / 100},
  }


def _cmrc(decoded: dict) -> dict:
  """CMRC 2018: metrics exact, f1 (character level, task_metrics.cmrc_scores); scores
  cmrc_em, cmrc_f1."""
  scores = task_metrics.cmrc_scores(decoded['predictions'], decoded['answers'])
  em, f1 = scores['exact_match'] / 100, scores['f1'] / 100
  return {
    'metrics': {'exact': em, 'f1': f1, 'coverage': decoded['coverage']},
    'scores': {'cmrc_em': em, 'cmrc_f1': f1},
  }


SCORERS = {'glue': _glue, 'accuracy': _accuracy, 'conll': _conll, 'squad': _squad, 'cmrc': _cmrc}


def score(decoded: dict) -> dict:
  """{'metrics': {name: value}, 'scores': {column: value}} of a split's decoded predictions.

  Raises:
    ValueError: `decoded['metric']` names no scorer.
  """
  name = decoded.get('metric')
  if name not in SCORERS:
    raise ValueError(
      f'decode_predictions returned metric={name!r}; the scorers are {sorted(SCORERS)} '
      '(evaluation/task_scores.py).'
    )
  return SCORERS[name](decoded)
