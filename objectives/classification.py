"""Sentence (pair) classification and regression: GLUE, CLUE, any labelled text.

Each example is one row, [CLS] text_a [SEP] text_b [SEP] (data/tasks.encode_pair)
with token types 0 / 1 and its label; BERT's pooled [CLS] state feeds a linear
layer (heads.SequenceClassifier). Classification minimizes cross-entropy;
regression (one output, STS-B) the squared error. The loader's eval padding rows
(no real token) weigh nothing.

Config (`objective.*`): `num_labels` (1 = regression), `task` (a GLUE task name
is scored with the task's official metrics, evaluation/task_metrics.glue_metrics; any
other name by accuracy).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from data import glue, tasks
from models import heads
from objectives.shared import task_inputs


def config() -> config_dict.ConfigDict:
  """Sentence (pair) classification's key."""
  c = config_dict.ConfigDict()
  c.num_labels = 2  # Outputs of the classifier; 1 is a regression (STS-B).
  return c


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
    return stream.map(lambda item: pair_row(item, tokenizer, seq_len))

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    del objective_cfg, tokenizer, seed
    return lambda rows: dict(
      task_inputs.encoder_inputs(rows), label=rows['label'].astype(np.float32)
    )

  def loss_fn(self, params, batch, rng, *, model):
    """Mean loss over the real rows; metrics `loss` (and `accuracy`) as (sum, weight)."""
    logits = task_inputs.apply(params, batch, rng, model)
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
    logits = task_inputs.apply(params, batch, None, model)
    prediction = logits[:, 0] if self.regression else jnp.argmax(logits, -1)
    return {'prediction': prediction, 'label': batch['label']}

  def decode_predictions(self, objective_cfg, outputs: dict, records) -> dict:
    """The split's predicted classes (or scores) and gold labels, for the task's metric:
    GLUE's official metrics for a GLUE task, accuracy otherwise."""
    del objective_cfg, records  # The labels travel with the rows.
    predictions, labels = outputs['prediction'], outputs['label']
    if not self.regression:
      predictions, labels = predictions.astype(np.int64), labels.astype(np.int64)
    metric = 'glue' if self.task in glue.TASKS else 'accuracy'
    return {'metric': metric, 'task': self.task, 'predictions': predictions, 'labels': labels}

  def eval_summary(self, values: dict) -> dict:
    return values


def pair_row(item: dict, tokenizer, seq_len: int, encode=tasks.encode_pair) -> dict:
  """The row of a sentence (pair) record from the loader's stream item {'text': record,
  'epoch', 'doc'}: encoded [CLS] a [SEP] b [SEP] (by `encode`, data/tasks.encode_pair's
  signature), its label and its record index."""
  record = item['text']
  if record['label'] is None:
    raise ValueError(f'Example {record["idx"]} has no label (a test split?).')
  return dict(
    encode(tokenizer, record['text_a'], record['text_b'], seq_len),
    label=np.float32(record['label']),
    epoch=np.int64(item['epoch']),
    example_id=np.int64(item['doc']),
  )


def configure(objective_cfg) -> Classification:
  """The objective of `objective.task` with `objective.num_labels` outputs."""
  num_labels = int(objective_cfg.num_labels)
  if num_labels < 1:
    raise ValueError(f'objective.num_labels={num_labels} must be >= 1 (1: regression).')
  return Classification(task=str(objective_cfg.task), num_labels=num_labels)
