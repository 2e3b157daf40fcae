"""What the fine-tuning objectives share: a task row's encoder inputs and the model call.

Task rows (one record -> one or more rows, built by the objective's `make_rows`) hold
'tokens', 'segment_ids' (1 real, 0 padding), 'positions', 'token_types' and the
record's 'example_id' (-1 on the loader's eval padding rows); every task head
(heads.SequenceClassifier, TokenClassifier, SpanExtractor) takes the first four.
"""

import numpy as np

# The batch arrays a task head takes, in its argument order.
MODEL_INPUTS = ('inputs', 'segment_ids', 'positions', 'token_types')


def encoder_inputs(rows: dict) -> dict:
  """The model-input arrays of a batch of task rows, plus each row's example id."""
  return {
    'inputs': rows['tokens'].astype(np.int32),
    'segment_ids': rows['segment_ids'].astype(np.int32),
    'positions': rows['positions'].astype(np.int32),
    'token_types': rows['token_types'].astype(np.int32),
    'example_id': rows['example_id'].astype(np.int32),
  }


def apply(params, batch: dict, rng, model):
  """The head's outputs on `batch`; `rng=None` (evaluation) runs without dropout. A head
  that takes more arrays names them in its `EXTRA_INPUTS` (models/graph.py's adjacency),
  passed by keyword."""
  extra = {name: batch[name] for name in getattr(model, 'EXTRA_INPUTS', ())}
  return model.apply(
    {'params': params},
    *(batch[name] for name in MODEL_INPUTS),
    deterministic=rng is None,
    rngs=None if rng is None else {'dropout': rng},
    **extra,
  )
