"""Sentence (pair) classification and regression: GLUE, CLUE, any labelled text.

Each example is one row, [CLS] text_a [SEP] text_b [SEP] (data/tasks.encode_pair)
with token types 0 / 1 and its label; BERT's pooled [CLS] state feeds a linear
layer (heads.SequenceClassifier). Classification minimizes cross-entropy;
regression (one output, STS-B) the squared error. The loader's eval padding rows
(no real token) weigh nothing.

Config (`objective.*`): `num_labels` (1 = regression), `task` (a GLUE task name
picks the official metrics of training/task_metrics.glue_metrics; any other name
is scored by accuracy).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax

from data import glue, tasks
from models import heads
from training import task_metrics

MODEL_INPUTS = ('inputs', 'segment_ids', 'positions', 'token_types')


@dataclasses.dataclass(frozen=True)
class Classification:
  """The objective API for one task (what `configure` returns)."""

  task: str
  num_labels: int

  FRAMING = ('cls_id', 'sep_id')
  SHOW = 'example'

  @property
  def regression(self) -> bool:
    return self.num_labels == 1

  def build_model(self, model_cfg):
    return heads.SequenceClassifier(model_cfg, self.num_labels)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """One row per record: the encoded pair, its label and its record index."""
    del objective_cfg, docs, unused

    def row(item: dict) -> dict:
      record = item['text']
      encoded = tasks.encode_pair(tokenizer, record['text_a'], record['text_b'], seq_len)
      label = record['label']
      if label is None:
        raise ValueError(f'Example {record["idx"]} has no label (a test split?).')
      return dict(
        encoded,
        label=np.float32(label),
        epoch=np.int64(item['epoch']),
        example_id=np.int64(item['doc']),
      )

    return stream.map(row)

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    del objective_cfg, tokenizer, seed

    def preprocess(rows: dict) -> dict:
      return {
        'inputs': rows['tokens'].astype(np.int32),
        'segment_ids': rows['segment_ids'].astype(np.int32),
        'positions': rows['positions'].astype(np.int32),
        'token_types': rows['token_types'].astype(np.int32),
        'label': rows['label'].astype(np.float32),
        'example_id': rows['example_id'].astype(np.int32),
      }

    return preprocess

  def _logits(self, params, batch, rng, model):
    return model.apply(
      {'params': params},
      *(batch[name] for name in MODEL_INPUTS),
      deterministic=rng is None,
      rngs=None if rng is None else {'dropout': rng},
    )  # [batch, num_labels]

  def loss_fn(self, params, batch, rng, *, model):
    """Mean loss over the real rows; metrics `loss` (and `accuracy`) as (sum, weight)."""
    logits = self._logits(params, batch, rng, model)
    real = (batch['segment_ids'][:, 0] > 0).astype(jnp.float32)  # [batch]
    total = jnp.sum(real)
    if self.regression:
      losses = jnp.square(logits[:, 0] - batch['label'])
      metrics = {}
    else:
      labels = batch['label'].astype(jnp.int32)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      correct = jnp.sum((jnp.argmax(logits, -1) == labels) * real)
      metrics = {'accuracy': (correct, total)}
    loss_sum = jnp.sum(losses * real)
    loss = loss_sum / jnp.maximum(total, 1.0)
    return loss, {'loss': (loss_sum, total), **metrics}

  def predict_fn(self, params, batch, *, model):
    """Per row: the predicted class (or score) and the gold label."""
    logits = self._logits(params, batch, None, model)
    prediction = logits[:, 0] if self.regression else jnp.argmax(logits, -1)
    return {'prediction': prediction, 'label': batch['label']}

  def evaluate_predictions(self, objective_cfg, outputs: dict, records) -> dict:
    """The task's official metrics; `scores` holds the one the GLUE table reports."""
    del objective_cfg, records  # The labels travel with the rows.
    predictions, labels = outputs['prediction'], outputs['label']
    if not self.regression:
      labels = labels.astype(np.int64)
    if self.task in glue.TASKS:
      metrics = task_metrics.glue_metrics(self.task, predictions, labels)
      # The metric BERT's Table 1 prints per task (the reference column's).
      main = {'cola': 'mcc', 'ax': 'mcc', 'mrpc': 'f1', 'qqp': 'f1', 'stsb': 'spearman'}
      score = metrics[main.get(self.task, 'accuracy')]
    else:
      metrics = {'accuracy': task_metrics.accuracy(predictions, labels)}
      score = metrics['accuracy']
    return {'metrics': metrics, 'scores': {self.task: score}}

  def eval_summary(self, values: dict) -> dict:
    return values


def configure(objective_cfg) -> Classification:
  """The objective of `objective.task` with `objective.num_labels` outputs."""
  num_labels = int(objective_cfg.get('num_labels', 2))
  if num_labels < 1:
    raise ValueError(f'objective.num_labels={num_labels} must be >= 1 (1: regression).')
  return Classification(task=str(objective_cfg.get('task', '')), num_labels=num_labels)
