"""Pattern-exploiting training (PET; Schick & Schütze 2021): classification as a cloze.

A pattern turns each record into text with an answer slot (data/prompts.py: 'Review:
{text_a}\\nSentiment: {answer}'); the slot becomes [MASK]s, one per piece of the answer
words, and the verbalizer names a word per label ('negative', 'positive'). The model is
the masked LM with its pretrained head (heads.MaskedLM, only the slot's states projected
onto the vocabulary); a label's score is the MLM head's log-probability of its word at
the slot (the sum over its pieces), and the loss is the cross-entropy of the softmax of
the scores over the labels (PET's L_CE; the vocabulary's normalizer cancels in it, so
this is PET's softmax over the words' raw logits). Nothing new is initialized: a few
examples train a model that already answers the cloze.

Config (`objective.*`): `task` (the prompt of data/prompts.py when the keys below are
empty, and the metric: GLUE's official one for a GLUE task, accuracy otherwise),
`num_labels` (classification's; must equal the verbalizer's words), `pattern` and
`pair_pattern` (templates for one- and two-text records), `verbalizer` (comma-separated
words in label order). Not here: PET's auxiliary MLM loss on unlabelled text, its
ensemble of patterns distilled into a classifier (iPET), and words of different
lengths (PET's multi-mask decoding).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from data import glue, prompts
from models import heads
from objectives.shared import task_inputs


def config() -> config_dict.ConfigDict:
  """PET's keys of `config.objective`."""
  c = config_dict.ConfigDict()
  c.pattern = ''  # One-text records: '{text_a}' and '{answer}' ('': data/prompts.py's).
  c.pair_pattern = ''  # Two-text records: '{text_a}', '{text_b}' and '{answer}'.
  c.verbalizer = ''  # Comma-separated answer word per label ('': data/prompts.py's).
  return c


@dataclasses.dataclass(frozen=True)
class PatternExploiting:
  """The objective API for one task's pattern and verbalizer (what `configure` returns)."""

  task: str
  prompt: prompts.Prompt

  FRAMING = ('cls_id', 'sep_id')
  SHOW = 'example'

  def build_model(self, model_cfg):
    return heads.MaskedLM(model_cfg)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """One row per record: the cloze, where its slot is, the label and the record index."""
    del objective_cfg, docs, unused
    answers = self.answers(tokenizer)

    def row(item):
      record = item['text']
      if record['label'] is None:
        raise ValueError(f'Example {record["idx"]} has no label (a test split?).')
      template = prompts.template_for(self.prompt, record)
      ids = answers[template]  # [labels, answer_len]
      return dict(
        prompts.encode_cloze(tokenizer, template, record, ids.shape[1], seq_len),
        answer_ids=ids,
        label=np.int32(record['label']),
        epoch=np.int64(item['epoch']),
        example_id=np.int64(item['doc']),
      )

    return stream.map(row)

  def answers(self, tokenizer) -> dict:
    """{template: [labels, answer_len] ids of the words in its slot}, for each template.

    Raises:
      ValueError: the one-text and the pair template give the words different lengths.
    """
    templates = [t for t in (self.prompt.template, self.prompt.pair_template) if t]
    answers = {t: prompts.answer_ids(tokenizer, self.prompt.words, t) for t in templates}
    if len({ids.shape for ids in answers.values()}) > 1:
      raise ValueError(
        'objective.pattern and pair_pattern read the answer words as different numbers of '
        'pieces; a batch needs one slot length.'
      )
    return answers

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    del objective_cfg, tokenizer, seed
    return lambda rows: dict(
      task_inputs.encoder_inputs(rows),
      mask_positions=rows['mask_positions'].astype(np.int32),
      answer_ids=rows['answer_ids'].astype(np.int32),
      label=rows['label'].astype(np.int32),
    )

  def label_scores(self, params, batch, rng, *, model):
    """[batch, labels]: the MLM head's log-probability of each label's word at the slot."""
    logits = model.apply(
      {'params': params},
      *(batch[name] for name in task_inputs.MODEL_INPUTS),
      deterministic=rng is None,
      masked_positions=batch['mask_positions'],
      rngs=None if rng is None else {'dropout': rng},
    )  # [batch, answer_len, vocab]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    answers = batch['answer_ids']  # [batch, labels, answer_len]
    # [batch, labels, answer_len]: position j's log-probability of piece j of each word.
    per_piece = jnp.take_along_axis(log_probs[:, None], answers[..., None], axis=-1)[..., 0]
    return jnp.sum(per_piece, axis=-1)

  def loss_fn(self, params, batch, rng, *, model):
    """Mean cross-entropy over the labels' scores on the real rows; metrics `loss`,
    `accuracy` as (sum, weight)."""
    scores = self.label_scores(params, batch, rng, model=model)
    real = (batch['segment_ids'][:, 0] > 0).astype(jnp.float32)  # [batch]
    total = jnp.sum(real)
    labels = batch['label']
    losses = optax.softmax_cross_entropy_with_integer_labels(scores, labels)
    loss_sum = jnp.sum(losses * real)
    correct = jnp.sum((jnp.argmax(scores, -1) == labels) * real)
    metrics = {'loss': (loss_sum, total), 'accuracy': (correct, total)}
    return loss_sum / jnp.maximum(total, 1.0), metrics

  def predict_fn(self, params, batch, *, model):
    """Per row: the predicted label, the gold label and every label's score."""
    scores = self.label_scores(params, batch, None, model=model)
    return {'prediction': jnp.argmax(scores, -1), 'label': batch['label'], 'scores': scores}

  def decode_predictions(self, objective_cfg, outputs: dict, records) -> dict:
    """The split's predicted and gold labels, for GLUE's metric of a GLUE task (else
    accuracy)."""
    del objective_cfg, records  # The labels travel with the rows.
    metric = 'glue' if self.task in glue.TASKS else 'accuracy'
    return {
      'metric': metric,
      'task': self.task,
      'predictions': np.asarray(outputs['prediction'], np.int64),
      'labels': np.asarray(outputs['label'], np.int64),
    }

  def eval_summary(self, values: dict) -> dict:
    return values


def configure(objective_cfg) -> PatternExploiting:
  """The objective of `objective.task` with the configured (or data/prompts.py's) prompt.

  Raises:
    ValueError: no prompt for the task and none configured, a template without its slot,
      or a verbalizer whose word count is not `objective.num_labels`.
  """
  task = str(objective_cfg.task)
  words = tuple(w.strip() for w in objective_cfg.verbalizer.split(',') if w.strip())
  pattern, pair_pattern = objective_cfg.pattern, objective_cfg.pair_pattern
  if not (words and (pattern or pair_pattern)):
    default = prompts.get(task)
    words = words or default.words
    if not (pattern or pair_pattern):
      pattern, pair_pattern = default.template, default.pair_template
  for template in (pattern, pair_pattern):
    if template:
      prompts.fields(template)
  num_labels = int(objective_cfg.num_labels)
  if len(words) != num_labels:
    raise ValueError(
      f'objective.verbalizer has {len(words)} word(s) {list(words)} for '
      f'objective.num_labels={num_labels} labels: one word per label.'
    )
  return PatternExploiting(task, prompts.Prompt(pattern, pair_pattern, words))
