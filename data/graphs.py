"""Per-example token graphs for the graph layers (models/graph.py): which tokens of a row
are linked.

`cooccurrence_adjacency` links two real tokens of the same attention segment that are at
most `window` positions apart (a sliding co-occurrence window, as TextGCN's word graph
but within one text) and, with `same_token`, two occurrences of the same token id (a word
repeated across the sentence or the pair). No edge touches padding; the graph is symmetric
and has no self-loops (the layers add them). Dependency arcs would be another builder of
the same [length, length] array; no parser ships with the project.
"""

import numpy as np


def cooccurrence_adjacency(
  tokens: np.ndarray, segment_ids: np.ndarray, window: int, same_token: bool = True
) -> np.ndarray:
  """[length, length] uint8 adjacency of one row.

  Args:
    tokens: [length] token ids.
    segment_ids: [length], 0 for padding; tokens of different segments are not linked by
      the window (packed texts stay apart), only by `same_token` within a segment.
    window: link tokens at most this many positions apart (0: none by position).
    same_token: also link every two positions holding the same token id.

  Raises:
    ValueError: a negative window.
  """
  if window < 0:
    raise ValueError(f'objective.graph_window={window} must be >= 0.')
  length = len(tokens)
  positions = np.arange(length)
  same_segment = (segment_ids[:, None] == segment_ids[None, :]) & (segment_ids[:, None] > 0)
  near = np.abs(positions[:, None] - positions[None, :]) <= window
  edges = same_segment & near
  if same_token:
    edges |= same_segment & (tokens[:, None] == tokens[None, :])
  np.fill_diagonal(edges, False)
  return edges.astype(np.uint8)
