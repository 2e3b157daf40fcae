"""Extractive question answering (SQuAD v1.1 / v2.0), fine-tuned as BERT's run_squad.py.

Rows: each question becomes one row per doc-stride window, `[CLS] question [SEP] window [SEP]`
(data/squad.py `features`, BERT's convert_examples_to_features), with the answer's start and end
token, or [CLS] (position 0) when the window does not hold the answer or there is none (v2.0).
The head (models/heads.SpanExtractor) gives a start and an end logit per token; the loss is the
mean of the start and end cross-entropies over the rows (Devlin et al. 2019, Sec. 4.2-4.3).
Evaluation decodes the best span over a question's windows with BERT's n-best rules
(data/squad.py `postprocess`); the evaluation scores it with the official SQuAD script's
rules (evaluation/task_metrics.py).

Config keys (`objective.*`, added by configs/squad.py): version (1 or 2), doc_stride (128),
max_query_length (64), n_best_size (20), max_answer_length (30).

Unlike BERT, padding positions are masked out of the start/end softmax (BERT leaves them in;
they never hold an answer), and a training question whose answer text is not at its offset
keeps its rows with weight 0 instead of being dropped (the rows are built once for training
and evaluation, and evaluation must predict every question).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from data import squad
from models import heads
from objectives.shared import task_inputs

# Rows are built by make_rows ([CLS] question [SEP] window [SEP]); nothing is packed.
FRAMING = ('cls_id', 'sep_id')
# tools.show: question | window, the gold answer in [[...]].
SHOW = 'spans'

# The row arrays preprocess passes on to the model batch (besides inputs, built from tokens).
_ROW_KEYS = (
  'example_id',  # The evaluation reads it from the batch to group a question's windows.
  'segment_ids',
  'positions',
  'token_types',
  'start_positions',
  'end_positions',
  'feature_index',
  'token_to_word',
  'max_context',
)
QA_METRICS = ('squad', 'cmrc')
_MASKED = -1e9  # Logit of padding positions: out of the softmax, finite for all-padding rows.


def config() -> config_dict.ConfigDict:
  """Extractive QA's keys (BERT's run_squad.py defaults)."""
  c = config_dict.ConfigDict()
  c.version = 1  # SQuAD 1 (v1.1) or 2 (v2.0: unanswerable questions).
  c.doc_stride = 128  # Tokens between the starts of the windows of a long context.
  c.max_query_length = 64  # Question tokens kept.
  c.n_best_size = 20  # Start and end candidates per window when decoding.
  c.max_answer_length = 30  # Longest answer, in tokens.
  c.qa_metric = 'squad'  # 'squad' (official EM / F1) or 'cmrc' (CMRC 2018's character level).
  return c


def build_model(model_cfg):
  """The encoder with a start/end logit per token."""
  return heads.SpanExtractor(model_cfg)


def _feature_settings(objective_cfg, seq_len: int) -> dict:
  return dict(
    max_seq_length=seq_len,
    doc_stride=objective_cfg.doc_stride,
    max_query_length=objective_cfg.max_query_length,
  )


def make_rows(objective_cfg, stream, docs, tokenizer, *, seq_len, seed, shard, num_shards):
  """The loader's rows: every window of every question of `stream` (a checkpointable flat map).

  Each row holds the arrays of data/squad.features plus 'weight' (1.0, or 0.0 when the answer
  text was not found at its offset), 'epoch' and 'example_id' (the record's index, `doc`).
  """
  import grain  # Imported only by the input pipeline, not the train step.

  del docs, seed, shard, num_shards  # Rows depend on the record alone; no randomness.
  settings = _feature_settings(objective_cfg, seq_len)
  if settings['doc_stride'] <= 0:
    raise ValueError(f'objective.doc_stride={settings["doc_stride"]} must be > 0.')

  class _Windows(grain.experimental.FlatMapTransform):
    # Not a limit the iterator enforces; a 384-token row of a SQuAD context has a few windows.
    max_fan_out = 64

    def flat_map(self, element):
      rows = []
      for row in squad.features(element['text'], tokenizer, train=False, **settings):
        found = row.pop('answer_found')
        row['weight'] = np.float32(found)
        row['epoch'] = np.int64(element['epoch'])
        row['example_id'] = np.int64(element['doc'])
        rows.append(row)
      return rows

  return grain.experimental.FlatMapIterDataset(stream, _Windows())


def make_preprocess(objective_cfg, tokenizer, seed: int):
  """Returns `preprocess(rows) -> batch`: the rows as model inputs and span targets.

  The batch also carries 'weights' [batch, length], 1 on the gold answer's tokens, which is
  what tools.show marks; the loss reads 'weight' [batch] (0 for padding rows).
  """
  del objective_cfg, tokenizer, seed

  def preprocess(rows: dict) -> dict:
    batch = {key: np.asarray(rows[key]) for key in _ROW_KEYS}
    batch['inputs'] = np.asarray(rows['tokens'], np.int32)
    weight = np.asarray(rows['weight'], np.float32) * np.any(rows['segment_ids'] > 0, axis=-1)
    batch['weight'] = weight.astype(np.float32)  # [batch]
    index = np.arange(batch['inputs'].shape[1])[None]  # [1, length]
    span = (index >= batch['start_positions'][:, None]) & (index <= batch['end_positions'][:, None])
    batch['weights'] = (span & (weight[:, None] > 0)).astype(np.float32)  # [batch, length]
    return batch

  return preprocess


def _logits(params, batch, rng, model):
  start, end = task_inputs.apply(params, batch, rng, model)  # [batch, length] each
  real = batch['segment_ids'] > 0  # [batch, length]
  return jnp.where(real, start, _MASKED), jnp.where(real, end, _MASKED)


def loss_fn(params, batch, rng, *, model):
  """Mean over weighted rows of (start cross-entropy + end cross-entropy) / 2."""
  start_logits, end_logits = _logits(params, batch, rng, model)  # [batch, length] each
  weight = batch['weight']  # [batch]
  starts, ends = batch['start_positions'], batch['end_positions']
  xent = optax.softmax_cross_entropy_with_integer_labels(start_logits, starts)
  xent += optax.softmax_cross_entropy_with_integer_labels(end_logits, ends)
  total = jnp.sum(weight)
  loss_sum = jnp.sum(0.5 * xent * weight)
  start_right = jnp.argmax(start_logits, -1) == starts
  end_right = jnp.argmax(end_logits, -1) == ends
  return loss_sum / jnp.maximum(total, 1.0), {
    'loss': (loss_sum, total),
    'start_accuracy': (jnp.sum(start_right * weight), total),
    'end_accuracy': (jnp.sum(end_right * weight), total),
    # Both ends right in the row (not the question's answer: that needs all its windows).
    'span_accuracy': (jnp.sum(start_right * end_right * weight), total),
  }


def eval_summary(values: dict[str, float]) -> dict[str, float]:
  return values


def predict_fn(params, batch, *, model) -> dict[str, jax.Array]:
  """Per row: start_logits, end_logits [batch, length] (padding at -1e9), and what
  decode_predictions needs to map them back to the context: feature_index [batch],
  token_to_word and max_context [batch, length]."""
  start_logits, end_logits = _logits(params, batch, None, model)
  return {
    'start_logits': start_logits,
    'end_logits': end_logits,
    'feature_index': batch['feature_index'],
    'token_to_word': batch['token_to_word'],
    'max_context': batch['max_context'],
  }


def _group_windows(outputs: dict) -> dict[int, tuple]:
  """example_id -> ((start, end logits), (token_to_word, max_context)), windows in order."""
  rows = collections.defaultdict(list)
  examples, windows = outputs['example_id'], outputs['feature_index']
  for i, (example, window) in enumerate(zip(examples, windows, strict=True)):
    rows[int(example)].append((int(window), i))
  grouped = {}
  for example, pairs in rows.items():
    windows = [w for w, _ in sorted(pairs)]
    if len(set(windows)) != len(windows):
      raise ValueError(f'question {example} has window(s) predicted twice: {sorted(windows)}')
    order = np.asarray([i for _, i in sorted(pairs)])
    start, end, words, context = (
      np.asarray(outputs[key])[order]
      for key in ('start_logits', 'end_logits', 'token_to_word', 'max_context')
    )
    grouped[example] = ((start, end), (words, context))
  return grouped


def decode_predictions(objective_cfg, outputs: dict, records: list) -> dict:
  """The predicted answer of every question: the best span over its windows (BERT's n-best
  rules, data/squad.postprocess), for the SQuAD scorer (evaluation/task_metrics.py).

  Args:
    objective_cfg: `version`, `n_best_size`, `max_answer_length`.
    outputs: predict_fn's arrays over the eval split plus 'example_id' (record index).
    records: the eval split's records (data/squad.py).

  Returns:
    {'metric': 'squad', 'version_2', 'predictions' {question id: text}, 'no_answer'
    {question id: null score minus best span score} (v2.0), 'answers' {question id: gold
    answers}, 'coverage': the fraction of questions predicted}; only those are scored.
  """
  version_2 = int(objective_cfg.version) == 2
  grouped = _group_windows(outputs)
  if not grouped or max(grouped) >= len(records) or min(grouped) < 0:
    raise ValueError(f'example ids must index the {len(records)} records; got {sorted(grouped)}')
  seen = [records[i] for i in sorted(grouped)]
  predictions, no_answer = squad.postprocess(
    seen,
    [grouped[i][0] for i in sorted(grouped)],
    [grouped[i][1] for i in sorted(grouped)],
    n_best_size=objective_cfg.n_best_size,
    max_answer_length=objective_cfg.max_answer_length,
    version_2=version_2,
  )
  if objective_cfg.qa_metric not in QA_METRICS:
    raise ValueError(f'objective.qa_metric={objective_cfg.qa_metric!r} is not one of {QA_METRICS}.')
  return {
    'metric': objective_cfg.qa_metric,
    'version_2': version_2,
    'predictions': predictions,
    'no_answer': no_answer,
    'answers': {r['id']: r['answers'] for r in seen},
    'coverage': len(seen) / len(records),
  }
