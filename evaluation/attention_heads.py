"""Where each attention head looks, in numbers (Clark et al. 2019, "What does BERT look
at?"): per layer and head, the mean attention a token pays to [CLS], to [SEP], to the
previous and the next token and to itself, and the mean entropy of its distribution.

Averages run over every real query token of every row (padding left out); 'previous'
over the queries that have a previous token in their segment, 'next' over those that
have a next one. Entropy is in nats: 0 when a head puts all its weight on one key,
ln(n) when it spreads it evenly over n keys.
"""

import numpy as np

STATISTICS = ('cls', 'sep', 'previous', 'next', 'self', 'entropy')


class HeadStatistics:
  """Sums of each statistic per layer and head over the batches added, and their counts."""

  def __init__(self, *, cls_id: int, sep_id: int):
    self.cls_id, self.sep_id = cls_id, sep_id
    self.sums: dict[str, np.ndarray] = {}
    self.counts: dict[str, int] = {name: 0 for name in STATISTICS}

  def add(self, weights: list[np.ndarray], tokens: np.ndarray, segment_ids: np.ndarray):
    """Adds a batch.

    Args:
      weights: per layer, the attention distributions [batch, heads, length, length]
        (models/intermediates.py `attention_weights`).
      tokens, segment_ids: the rows [batch, length] (segment 0: padding).
    """
    tokens, segment_ids = np.asarray(tokens), np.asarray(segment_ids)
    real = segment_ids > 0  # [batch, q]
    after_previous = np.zeros_like(real)  # The query has a previous token in its segment.
    after_previous[:, 1:] = real[:, 1:] & (segment_ids[:, 1:] == segment_ids[:, :-1])
    before_next = np.zeros_like(real)
    before_next[:, :-1] = after_previous[:, 1:]
    is_cls = ((tokens == self.cls_id) & real).astype(np.float64)  # [batch, k]
    is_sep = ((tokens == self.sep_id) & real).astype(np.float64)
    where = {name: real for name in STATISTICS}
    where['previous'], where['next'] = after_previous, before_next
    sums = {name: [] for name in STATISTICS}
    for probs in weights:
      p = np.asarray(probs, np.float64)  # [batch, heads, q, k]
      previous = np.zeros(p.shape[:3])
      previous[..., 1:] = np.diagonal(p, offset=-1, axis1=2, axis2=3)  # p[q, q - 1]
      following = np.zeros(p.shape[:3])
      following[..., :-1] = np.diagonal(p, offset=1, axis1=2, axis2=3)  # p[q, q + 1]
      logs = np.log(np.where(p > 0, p, 1.0))
      per_query = {  # Each [batch, heads, q].
        'cls': np.einsum('bhqk,bk->bhq', p, is_cls),
        'sep': np.einsum('bhqk,bk->bhq', p, is_sep),
        'previous': previous,
        'next': following,
        'self': np.diagonal(p, axis1=2, axis2=3),
        'entropy': -np.sum(p * logs, axis=-1),
      }
      for name, values in per_query.items():
        sums[name].append(np.einsum('bhq,bq->h', values, where[name].astype(np.float64)))
    for name in STATISTICS:
      total = np.stack(sums[name])  # [layers, heads]
      self.sums[name] = self.sums[name] + total if name in self.sums else total
      self.counts[name] += int(where[name].sum())

  def means(self) -> dict[str, np.ndarray]:
    """{statistic: [layers, heads]} means over everything added."""
    if not self.sums:
      raise ValueError('No batch was added.')
    return {name: self.sums[name] / max(self.counts[name], 1) for name in STATISTICS}


def describe_heads(stats: dict[str, np.ndarray], top: int = 3) -> list[str]:
  """Lines naming, for [CLS], [SEP], previous and next, the heads that attend to it most
  (as 'L<layer>H<head> 0.93', counting from 0), and the broadest and sharpest heads."""
  lines = []
  for name in ('cls', 'sep', 'previous', 'next', 'self'):
    values = stats[name]
    order = np.argsort(-values, axis=None)[:top]
    heads = [np.unravel_index(i, values.shape) for i in order]
    lines.append(
      f'{name:>8}: '
      + ', '.join(f'L{layer}H{head} {values[layer, head]:.2f}' for layer, head in heads)
    )
  entropy = stats['entropy']
  for label, pick in (('broadest', np.argmax), ('sharpest', np.argmin)):
    layer, head = np.unravel_index(pick(entropy), entropy.shape)
    lines.append(f'{label:>8}: L{layer}H{head} entropy {entropy[layer, head]:.2f} nats')
  return lines
