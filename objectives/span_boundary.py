"""SpanBERT's span boundary objective (SBO): predict every token of a masked span from
the two tokens just outside it and its offset in the span (Joshi et al. 2020, 3.2).

An auxiliary objective (objectives/multitask.py) on top of span masking, which
marks each masked position's boundaries (span_left, span_right, span_offset):

  c.objective.module = 'objectives.multitask'
  c.objective.parts = 'objectives.span_masking:1.0,objectives.span_boundary:1.0'

The head is heads.SpanBoundaryHead (a 2-layer GeLU + LayerNorm MLP over the two
boundary states and an offset embedding, projected onto the tied vocabulary); the
loss is the cross-entropy over the masked positions, the same targets as MLM's,
and SpanBERT adds the two with weight 1.
"""

from objectives.shared import metrics

AUX_HEAD = 'span_boundary'
_SPAN_KEYS = ('span_left', 'span_right', 'span_offset')


def make_aux_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `extra(rows, batch) -> {}` after checking the trunk marked its spans."""
  del objective_cfg, tokenizer, seed  # The trunk's span masking drew the spans.

  def extra(rows: dict, batch: dict) -> dict:
    del rows
    missing = [key for key in _SPAN_KEYS if key not in batch]
    if missing:
      raise ValueError(
        f'objectives.span_boundary needs {", ".join(missing)} from the trunk objective; '
        "use 'objectives.span_masking' as the first of objective.parts."
      )
    return {}

  return extra


def aux_loss(logits, batch, objective_cfg):
  """Mean cross-entropy of the SBO logits [batch, length, vocab] over the masked tokens."""
  del objective_cfg
  return metrics.token_cross_entropy(logits, batch['targets'], batch['weights'])
