"""MT-DNN multi-task fine-tuning (Liu et al. 2019, "Multi-Task Deep Neural Networks for
Natural Language Understanding"): one shared encoder, one output layer per task.

The shared layers are BERT's encoder and pooler (Backbone's names, so `init_from`
loads a pretrained backbone into them); each task has a linear layer of its own on
the pooled [CLS] state, `classifier_<task>`, with 1 output for STS-B (regression) and
one per label otherwise (data/glue.TASKS). Every row is a single task's example
(data/tasks.py tags each record with `task`, its index in `objective.tasks`); the
loss computes every head and keeps each row's own: cross-entropy for a classification
task, squared error for STS-B, averaged over the batch's real rows, and logs each
task's loss (and accuracy) separately.

Task sampling: MT-DNN draws a task in proportion to its size, then a whole mini-batch
of that task. Here the train split is the tasks' records concatenated and shuffled per
epoch (data/tasks.py), so a batch mixes tasks. Both visit every example once an
epoch, and a row belongs to task t with probability n_t / sum(n) in either; the
gradient of a mixed batch is the expectation of MT-DNN's per-task batch gradients
(same per-example weights), so the two agree in expectation and differ only in the
variance of a step. Mixing keeps fixed-shape batches and needs no loader change.

Evaluation: one eval split per task ('rte:dev', data/tasks.eval_splits), each scored
with its task's GLUE metrics; `scores` holds one column per task ({'mrpc': ..,
'rte': .., 'stsb': ..}, the columns configs/glue.py reports), and the trainer keeps
the checkpoint that is best on the first task's score. (MT-DNN's model selection by
the tasks' average dev score would need evaluation/ to pass it first.)

Config (`objective.*`): `tasks`, the comma-separated GLUE tasks, the same list as
`data.task` (configs/mtdnn.py).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from data import glue
from models import dropout, flops, heads, transformer
from objectives import classification
from objectives.shared import task_inputs


def config() -> config_dict.ConfigDict:
  """MT-DNN's key."""
  c = config_dict.ConfigDict()
  c.tasks = ''  # GLUE tasks, comma-separated, as data.task ('mrpc,rte,stsb').
  return c


class MultiTaskClassifier(nn.Module):
  """The shared encoder and pooler, dropout, and one linear layer per task.

  Returns {task: logits [batch, num_labels of the task]} for every task (float32).
  """

  cfg: transformer.TransformerConfig
  tasks: tuple[str, ...]
  num_labels: tuple[int, ...]

  def setup(self):
    cfg = self.cfg
    self.encoder = transformer.Stack(cfg, name='encoder')
    self.pooler = heads.Pooler(cfg, name='pooler')
    self.dropout = dropout.Dropout(cfg.dropout_rate)
    self.classifiers = [
      heads.classes_dense(cfg, n, f'classifier_{task}')
      for task, n in zip(self.tasks, self.num_labels, strict=True)
    ]

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    pooled = self.dropout(self.pooler(x), deterministic=deterministic)  # [batch, embed]
    return {
      task: head(pooled).astype(jnp.float32)  # [batch, num_labels]
      for task, head in zip(self.tasks, self.classifiers, strict=True)
    }

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The pooler and every task's classifier, once per row (each row runs them all)."""
    del predicted_len
    return flops.pooled_classifier_macs(self.cfg, sum(self.num_labels), seq_len)


@dataclasses.dataclass(frozen=True)
class MultiTask:
  """The objective API for a set of GLUE tasks (what `configure` returns)."""

  tasks: tuple[str, ...]

  FRAMING = ('cls_id', 'sep_id')
  SHOW = 'example'

  @property
  def num_labels(self) -> tuple[int, ...]:
    """Outputs per task: 1 for a regression (STS-B), else the number of labels."""
    specs = [glue.get_task(task) for task in self.tasks]
    return tuple(1 if spec.is_regression else len(spec.labels) for spec in specs)

  def build_model(self, model_cfg):
    return MultiTaskClassifier(model_cfg, self.tasks, self.num_labels)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """One row per record: the encoded pair, its label, its task index and record index."""
    del objective_cfg, docs, unused

    def row(item: dict) -> dict:
      task = np.int32(item['text'].get('task', 0))  # A single task's records are untagged.
      return dict(classification.pair_row(item, tokenizer, seq_len), task=task)

    return stream.map(row)

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    del objective_cfg, tokenizer, seed

    def preprocess(rows: dict) -> dict:
      batch = task_inputs.encoder_inputs(rows)
      return dict(batch, label=rows['label'].astype(np.float32), task=rows['task'].astype(np.int32))

    return preprocess

  def loss_fn(self, params, batch, rng, *, model):
    """Mean over the real rows of each row's own task loss; metrics `loss`, and per task
    `<task>_loss` (and `<task>_accuracy`) as (sum, weight)."""
    logits = task_inputs.apply(params, batch, rng, model)  # {task: logits}
    real = (batch['segment_ids'][:, 0] > 0).astype(jnp.float32)  # [batch]
    losses = jnp.zeros_like(real)  # [batch]: each row's loss under its own head.
    metrics = {}
    for k, (task, n) in enumerate(zip(self.tasks, self.num_labels, strict=True)):
      mine = real * (batch['task'] == k)  # [batch]: this task's real rows.
      if n == 1:
        task_losses = jnp.square(logits[task][:, 0] - batch['label'])
      else:
        # Other tasks' rows may hold labels (or STS-B scores) out of this head's range;
        # their loss is discarded, the clip only keeps the gather in bounds.
        labels = jnp.clip(batch['label'].astype(jnp.int32), 0, n - 1)
        task_losses = optax.softmax_cross_entropy_with_integer_labels(logits[task], labels)
        correct = jnp.sum((jnp.argmax(logits[task], -1) == labels) * mine)
        metrics[f'{task}_accuracy'] = (correct, jnp.sum(mine))
      metrics[f'{task}_loss'] = (jnp.sum(task_losses * mine), jnp.sum(mine))
      losses = jnp.where(batch['task'] == k, task_losses, losses)
    total = jnp.sum(real)
    loss_sum = jnp.sum(losses * real)
    loss = loss_sum / jnp.maximum(total, 1.0)
    return loss, {'loss': (loss_sum, total), **metrics}

  def predict_fn(self, params, batch, *, model):
    """Per row, from its own task's head: the predicted class (or score), the gold label
    and the task index."""
    logits = task_inputs.apply(params, batch, None, model)
    prediction = jnp.zeros(batch['label'].shape, jnp.float32)  # [batch]
    for k, (task, n) in enumerate(zip(self.tasks, self.num_labels, strict=True)):
      mine = logits[task][:, 0] if n == 1 else jnp.argmax(logits[task], -1).astype(jnp.float32)
      prediction = jnp.where(batch['task'] == k, mine, prediction)
    return {'prediction': prediction, 'label': batch['label'], 'task': batch['task']}

  def decode_predictions(self, objective_cfg, outputs: dict, records) -> dict:
    """One task's split (all its rows share a task index): that task's predictions for
    its GLUE metrics (the evaluation names them '<task>_<metric>': data/tasks.py gives
    a multi-task set's splits as 'task:split')."""
    found = np.unique(outputs['task'])
    if len(found) != 1:
      raise ValueError(f'An eval split of several tasks {found.tolist()}: expected one task.')
    k = int(found[0])
    if records and records[0].get('task', k) != k:
      raise ValueError(f'Eval rows of task {k} but records of task {records[0]["task"]}.')
    task, n = self.tasks[k], self.num_labels[k]
    single = classification.Classification(task=task, num_labels=n)
    return single.decode_predictions(objective_cfg, outputs, records)

  def eval_summary(self, values: dict) -> dict:
    return values


def configure(objective_cfg) -> MultiTask:
  """The multi-task objective of `objective.tasks` ('mrpc,rte,stsb')."""
  names = tuple(t.strip() for t in str(objective_cfg.tasks).split(',') if t.strip())
  if len(names) < 1:
    raise ValueError("objective.tasks must name GLUE tasks, e.g. 'mrpc,rte,stsb'.")
  if len(set(names)) != len(names):
    raise ValueError(f'objective.tasks={names} repeats a task.')
  for name in names:
    glue.get_task(name)  # Raises for an unknown task.
  return MultiTask(tasks=names)
