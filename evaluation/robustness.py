"""A word-substitution attack on a fine-tuned sentence classifier: how many of its right
answers survive swapping a few words for their neighbours in its own embedding space.

For each example the model gets right, words are swapped greedily, best first: at each
step every remaining word position is tried with each of its `neighbours` nearest words
(cosine similarity of the model's token-embedding rows), the one swap that most lowers
the probability of the gold label is kept, and the attack stops when the prediction
flips (a success) or when `max_fraction` of the words (at least one) were changed.

A word here is a single-piece, alphabetic token of two or more letters that starts a word
and is not followed by a continuation piece (data/word_units.py), so a swap replaces a
whole word by a whole word; the neighbours are drawn from the same kind of tokens. The
attack is white-box on the embeddings only (which words are near) and black-box on the
model (it reads the output probabilities), close to Alzantot et al. 2018's and TextFooler's
(Jin et al. 2020) greedy searches without their language-model or sentence-similarity
filters, so a swap may change the meaning: the figures compare models under one attack,
they do not certify robustness.

Reported (`summarize`): clean accuracy, accuracy under attack (right before and after),
the attack's success rate over the right examples, and the mean words changed (and
fraction of words) of the successful attacks.
"""

import dataclasses

import numpy as np

from data import word_units
from evaluation import fine_tuned_classifier

INPUTS = fine_tuned_classifier.INPUTS


@dataclasses.dataclass
class Attacked:
  """One example's attack."""

  label: int
  clean_prediction: int
  prediction: int  # After the attack (the clean one when it was not attacked).
  words: int  # Words that could be swapped.
  swaps: list[tuple[int, int, int]]  # (position, old id, new id), in the order made.
  tokens: list[int]  # The row's real tokens after the swaps.

  @property
  def attacked(self) -> bool:
    return self.clean_prediction == self.label

  @property
  def success(self) -> bool:
    return self.attacked and self.prediction != self.label


def swappable(tokenizer) -> np.ndarray:
  """[vocab] bool: single-piece alphabetic word tokens of two or more letters."""
  starts = word_units.word_start_table(tokenizer)
  special = set(int(i) for i in tokenizer.special_ids)
  out = np.zeros(tokenizer.vocab_size, bool)
  for i in range(tokenizer.vocab_size):
    word = tokenizer.id_to_piece(i).lstrip('▁')
    out[i] = starts[i] and i not in special and len(word) >= 2 and word.isalpha()
  return out


def neighbours(table: np.ndarray, ids: np.ndarray, allowed: np.ndarray, k: int) -> dict:
  """{id: its k nearest allowed ids by cosine similarity, nearest first, itself excluded}."""
  unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
  pool = np.flatnonzero(allowed)
  out = {}
  for start in range(0, len(ids), 256):
    chunk = ids[start : start + 256]
    similarity = unit[chunk] @ unit[pool].T  # [chunk, pool]
    similarity[pool[None, :] == chunk[:, None]] = -np.inf
    best = np.argsort(-similarity, axis=1, kind='stable')[:, :k]
    out.update({int(i): pool[row].tolist() for i, row in zip(chunk, best, strict=True)})
  return out


def positions(tokens: np.ndarray, length: int, allowed: np.ndarray, starts: np.ndarray) -> list:
  """The row's swappable word positions between [CLS] and the last [SEP]: an allowed
  token whose next token starts a word (special tokens count as starts)."""
  return [i for i in range(1, length - 1) if allowed[tokens[i]] and starts[tokens[i + 1]]]


class Scorer:
  """Class probabilities of rows, in fixed-size batches (one compilation)."""

  def __init__(self, model, params, batch_size: int):
    self.model, self.params, self.batch_size = model, params, batch_size
    self.rows_scored = 0

  def __call__(self, rows: dict) -> np.ndarray:
    probs = fine_tuned_classifier.in_batches(
      lambda _, inputs: fine_tuned_classifier.probabilities(self.params, inputs, model=self.model),
      rows,
      self.batch_size,
    )
    self.rows_scored += len(rows['tokens'])
    return probs


def attack_row(
  score: Scorer, row: dict, label: int, *, allowed: np.ndarray, starts: np.ndarray,
  near: dict, max_fraction: float,
) -> Attacked:  # fmt: skip
  """The greedy attack on one row {'tokens', 'segment_ids', 'positions', 'token_types'}
  [length] (`near`: each swappable id's neighbours)."""
  length = int((row['segment_ids'] > 0).sum())
  tokens = row['tokens'].copy()
  clean = int(np.argmax(score({k: v[None] for k, v in row.items()})[0]))
  open_positions = positions(tokens, length, allowed, starts)
  result = Attacked(label, clean, clean, len(open_positions), [], tokens[:length].tolist())
  if clean != label or not open_positions:
    return result
  budget = max(1, int(max_fraction * len(open_positions)))
  while len(result.swaps) < budget and open_positions:
    tries = [(p, new) for p in open_positions for new in near[int(tokens[p])]]
    batch = {k: np.repeat(v[None], len(tries), 0) for k, v in row.items()}
    batch['tokens'] = np.repeat(tokens[None], len(tries), 0)
    for n, (p, new) in enumerate(tries):
      batch['tokens'][n, p] = new
    probs = score(batch)
    best = int(np.argmin(probs[:, label]))
    p, new = tries[best]
    result.swaps.append((p, int(tokens[p]), new))
    tokens[p] = new
    open_positions.remove(p)
    result.prediction = int(np.argmax(probs[best]))
    if result.prediction != label:
      break
  result.tokens = tokens[:length].tolist()
  return result


def attack(
  model, params, tokenizer, rows: dict, labels: np.ndarray, *, table: np.ndarray,
  k: int = 8, max_fraction: float = 0.2, batch_size: int = 64,
) -> list[Attacked]:  # fmt: skip
  """Attacks every row of `rows` (arrays [n, length]) with gold `labels` [n].

  Args:
    table: the model's token-embedding rows [vocab, dim], whose neighbours are swapped in.
    k: neighbours tried per word.
    max_fraction: most words changed per example, as a fraction of its swappable words
      (at least one).
  """
  allowed = swappable(tokenizer)
  starts = word_units.word_start_table(tokenizer)
  used = np.unique(rows['tokens'][allowed[rows['tokens']]])
  near = neighbours(np.asarray(table, np.float32), used, allowed, k)
  score = Scorer(model, params, batch_size)
  return [
    attack_row(score, {name: rows[name][i] for name in INPUTS}, int(labels[i]),
               allowed=allowed, starts=starts, near=near, max_fraction=max_fraction)
    for i in range(len(labels))
  ]  # fmt: skip


def summarize(results: list[Attacked]) -> dict:
  """The attack's figures over `results` (see the module docstring)."""
  n = len(results)
  right = [r for r in results if r.attacked]
  won = [r for r in right if r.success]
  return {
    'examples': n,
    'clean_accuracy': len(right) / max(n, 1),
    'attacked_accuracy': (len(right) - len(won)) / max(n, 1),
    'success_rate': len(won) / max(len(right), 1),
    'mean_words_changed': float(np.mean([len(r.swaps) for r in won])) if won else 0.0,
    'mean_fraction_changed': (
      float(np.mean([len(r.swaps) / r.words for r in won])) if won else 0.0
    ),
  }
