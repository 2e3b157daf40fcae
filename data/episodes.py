"""N-way K-shot episodes over a classification task's records, for meta-learning
(objectives/prototypical.py, objectives/fomaml.py).

With `data.episodes.ways` = N > 0, the documents of a task source are episodes instead of
records: episode i draws N classes, then K = `shots` support and Q = `queries` query
records of each class, without replacement, all as a function of (seed, i). The train
episodes draw from the train split's records of the classes not held out, the eval
episodes from the eval split's records of the held-out classes
(`data.episodes.held_out`, label values), so evaluation measures how a model does on
classes it never trained on (Vinyals et al. 2016; Snell et al. 2017). Both sets are fixed
by `data.episodes.seed`: `train_count` train episodes, which the loader reshuffles every
epoch by `config.seed`, and `eval_count` eval episodes, the same for every run, so runs
compare on the same tasks.

An episode: {'records': N x (K + Q) records, class-major (each class's K support records,
then its Q queries); 'labels': [N (K + Q)] the class's position 0..N-1 in the episode;
'query': [N (K + Q)] bool; 'classes': the N label values}.
"""

import collections
from collections.abc import Sequence

import numpy as np


class Episodes(Sequence):
  """`count` episodes over `records`, drawn from `classes`, random access."""

  def __init__(self, records: list[dict], classes, *, ways: int, shots: int, queries: int,
               count: int, seed: int, name: str = 'episodes'):  # fmt: skip
    """Raises:
    ValueError: fewer classes than ways, or a class with fewer than shots + queries records.
    """
    self._records, self._classes = records, sorted(classes)
    self.ways, self.shots, self.queries, self._count, self._seed = ways, shots, queries, count, seed
    by_class = collections.defaultdict(list)
    for i, record in enumerate(records):
      by_class[record['label']].append(i)
    self._by_class = {c: np.asarray(by_class[c]) for c in self._classes}
    if len(self._classes) < ways or ways < 1:
      raise ValueError(
        f'{name}: {ways}-way episodes need at least {ways} classes; there are '
        f'{len(self._classes)} ({self._classes}).'
      )
    for c, members in self._by_class.items():
      if len(members) < shots + queries:
        raise ValueError(
          f'{name}: class {c!r} has {len(members)} records, fewer than shots + queries = '
          f'{shots + queries}.'
        )

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, i: int) -> dict:
    if not 0 <= i < self._count:
      raise IndexError(i)
    rng = np.random.default_rng([self._seed, i])
    classes = [self._classes[j] for j in rng.choice(len(self._classes), self.ways, replace=False)]
    per_class = self.shots + self.queries
    records, labels, query = [], [], []
    for position, c in enumerate(classes):
      picks = rng.choice(self._by_class[c], per_class, replace=False)
      records += [self._records[j] for j in picks]
      labels += [position] * per_class
      query += [False] * self.shots + [True] * self.queries
    return {'records': records, 'labels': labels, 'query': query, 'classes': classes}


def held_out_classes(text: str) -> set:
  """The label values of `data.episodes.held_out` ('6,7,8,9'): ints where they are ints."""
  values = [v.strip() for v in text.split(',') if v.strip()]
  return {int(v) if v.lstrip('-').isdigit() else v for v in values}


def episodes(records: list[dict], episodes_cfg, split: str) -> Episodes:
  """The train or eval episodes of `records` (that split's records) by `data.episodes`.

  Raises:
    ValueError: no held-out classes, or a held-out class missing from the records.
  """
  held = held_out_classes(episodes_cfg.held_out)
  if not held:
    raise ValueError(
      'data.episodes.held_out must name the label values kept for evaluation (e.g. "6,7,8,9").'
    )
  labels = {r['label'] for r in records}
  missing = held - labels
  if split == 'eval' and missing:
    raise ValueError(
      f'data.episodes.held_out={episodes_cfg.held_out!r}: no eval record has label(s) '
      f'{sorted(missing, key=str)}; the labels are {sorted(labels, key=str)}.'
    )
  classes = held if split == 'eval' else labels - held
  train = split == 'train'
  return Episodes(
    records, classes, ways=episodes_cfg.ways, shots=episodes_cfg.shots,
    queries=episodes_cfg.queries, count=episodes_cfg.train_count if train else episodes_cfg.eval_count,
    seed=episodes_cfg.seed, name=f'data.episodes ({split})',
  )  # fmt: skip
