"""Lifelong (continual) learning's figures over a task sequence (tools/lifelong.py).

The score matrix R[j, i] is the dev score of task i after training on tasks 0..j in
order (each with its GLUE metric, in percent). From it, over T tasks:
  average score   mean_i R[T-1, i]: what the final model keeps of every task;
  forgetting      mean over i < T-1 of max_{i <= j < T-1} R[j, i] - R[T-1, i]: how far each
                  earlier task fell from its best (Chaudhry et al. 2018, "Riemannian walk");
  backward transfer  mean over i < T-1 of R[T-1, i] - R[i, i]: the effect of the later tasks
                  on the earlier ones, negative when they forget (Lopez-Paz & Ranzato 2017).
R[j, i] for i > j (a task not trained yet, its head untrained) is kept in the matrix and
used by none of these.
"""

import numpy as np


def score_matrix(stage_scores: list[dict], tasks: list[str]) -> np.ndarray:
  """[stages, tasks] from each stage's {task: score} (eval.json 'scores', fractions) in %."""
  return np.asarray([[100.0 * float(s[t]) for t in tasks] for s in stage_scores])


def average_score(matrix: np.ndarray) -> float:
  return float(matrix[-1].mean())


def forgetting(matrix: np.ndarray) -> float:
  """Mean drop of the earlier tasks from their best score after being learnt; 0 with one task."""
  last = matrix.shape[0] - 1
  if last < 1:
    return 0.0
  drops = [matrix[i:last, i].max() - matrix[last, i] for i in range(last)]
  return float(np.mean(drops))


def backward_transfer(matrix: np.ndarray) -> float:
  last = matrix.shape[0] - 1
  if last < 1:
    return 0.0
  return float(np.mean([matrix[last, i] - matrix[i, i] for i in range(last)]))


def summary(matrix: np.ndarray) -> dict:
  return {
    'average': average_score(matrix),
    'forgetting': forgetting(matrix),
    'backward_transfer': backward_transfer(matrix),
  }


def matrix_table(name: str, matrix: np.ndarray, tasks: list[str]) -> str:
  """Markdown: one row per stage ('after <task>'), one column per task scored."""
  lines = [f'| {name}: after \\ on | ' + ' | '.join(tasks) + ' |', '|---|' + '---|' * len(tasks)]
  for j, row in enumerate(matrix):
    lines.append(f'| {tasks[j]} | ' + ' | '.join(f'{v:.2f}' for v in row) + ' |')
  return '\n'.join(lines)
