"""Token tagging (NER) fine-tuning as BERT does it on CoNLL-2003 (Devlin et al. 2019, 5.3).

One row per sentence: [CLS] sub-tokens [SEP], every word tokenized on its own. The tag of a
word (BIO / IOB2, e.g. B-PER I-PER O) is the label of its first sub-token only; later
sub-tokens, [CLS], [SEP] and padding carry no label and no weight. The model is the encoder
with a per-token linear classifier (models/heads.TokenClassifier); the loss is the token
cross-entropy over the labelled positions.

A sentence longer than `seq_len - 2` sub-tokens is cut there, as BERT's fine-tuning cuts
its inputs: the words whose first sub-token is cut off (and a word that tokenizes to no
pieces at all) are never trained on, and at evaluation they are predicted 'O' and scored
as such against their gold tags (a cut-off entity is a miss, never a silent drop). On
CoNLL-2003 with seq_len 128 and BERT's cased WordPiece that concerns a handful of sentences.

Evaluation (`decode_predictions`): each row's argmax tag at its words' first sub-tokens is
mapped back to the words of its record; the evaluation computes conlleval's entity-level
precision, recall and F1 over all predicted sentences (evaluation/task_metrics.entity_f1).

The label set is `objective.labels`, comma-separated, in id order (configs/conll.py sets
CoNLL-2003's nine tags); the order fixes the classifier's output ids, so a checkpoint is
evaluated with the labels it was trained with.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from data import conll
from models import heads
from objectives.shared import metrics, task_inputs

# CoNLL-2003's IOB2 tags in the order the classifier's outputs are numbered.
CONLL_LABELS = ('O', 'B-PER', 'I-PER', 'B-ORG', 'I-ORG', 'B-LOC', 'I-LOC', 'B-MISC', 'I-MISC')


def config() -> config_dict.ConfigDict:
  """Token tagging's key."""
  c = config_dict.ConfigDict()
  c.labels = ''  # Tags in id order, comma-separated; '' is CoNLL-2003's nine.
  return c


def parse_labels(objective_cfg) -> tuple[str, ...]:
  """The tags of `objective.labels` (comma-separated, id order); CoNLL-2003's by default."""
  text = objective_cfg.labels
  labels = tuple(tag.strip() for tag in text.split(',') if tag.strip()) or CONLL_LABELS
  if len(set(labels)) != len(labels):
    raise ValueError(f'objective.labels={text!r} names a tag twice.')
  if 'O' not in labels:
    raise ValueError(f"objective.labels={text!r} lacks 'O' (the tag of cut-off words).")
  return labels


def encode_sentence(words, tags, tokenizer, label_to_id: dict[str, int], seq_len: int) -> dict:
  """The row arrays of one sentence: [CLS] sub-tokens [SEP], cut to `seq_len`, then padded.

  Args:
    words: the sentence's words.
    tags: one tag per word.
    tokenizer: data/tokenizers.py Tokenizer (each word is encoded on its own).
    label_to_id: tag -> label id.
    seq_len: row length (at least 3).

  Returns:
    {'tokens', 'segment_ids' (1 real, 0 padding), 'positions', 'token_types' (0),
    'labels' (the word's tag id at its first sub-token, 0 elsewhere), 'label_weights' (1 at
    first sub-tokens), 'word_numbers' (1 + the word's index at its first sub-token, 0
    elsewhere: how evaluation finds the words again)}, each [seq_len] int32 (weights float32).
  """
  if len(words) != len(tags):
    raise ValueError(f'{len(words)} words but {len(tags)} tags: {list(words)[:8]}...')
  pieces = [tokenizer.encode(word) for word in words]
  counts = np.array([len(p) for p in pieces], np.int64)  # [words]
  ids = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
  word_ids = np.repeat(np.arange(len(words)), counts)  # [sub-tokens] word of each
  room = seq_len - 2  # [CLS] and [SEP].
  ids, word_ids = ids[:room], word_ids[:room]
  n = len(ids) + 2
  tokens = np.zeros(seq_len, np.int32)
  tokens[:n] = np.concatenate([[tokenizer.cls_id], ids, [tokenizer.sep_id]])
  framed_words = np.full(seq_len, -1, np.int64)  # -1 at [CLS], [SEP] and padding.
  framed_words[1 : n - 1] = word_ids
  labels = conll.first_subtoken_labels(framed_words, list(tags), label_to_id, ignore=-1)
  first = labels >= 0  # [seq_len]
  segment_ids = np.zeros(seq_len, np.int32)
  segment_ids[:n] = 1
  positions = np.zeros(seq_len, np.int32)
  positions[:n] = np.arange(n)
  return {
    'tokens': tokens,
    'segment_ids': segment_ids,
    'positions': positions,
    'token_types': np.zeros(seq_len, np.int32),
    'labels': np.maximum(labels, 0).astype(np.int32),
    'label_weights': first.astype(np.float32),
    'word_numbers': np.where(first, framed_words + 1, 0).astype(np.int32),
  }


def conll_decoded(records: list, predicted: dict[int, list[str]]) -> dict:
  """The 'conll' scorer's input: gold and predicted word tags of the predicted records
  (record index -> tags), in record order.

  Raises:
    ValueError: nothing predicted.
  """
  if not predicted:
    raise ValueError('no predicted sentences to score.')
  order = sorted(predicted)
  return {
    'metric': 'conll',
    'gold': [list(records[i]['tags']) for i in order],
    'predicted': [predicted[i] for i in order],
  }


@dataclasses.dataclass(frozen=True)
class Tagging:
  """The objective API (objectives/api.py) for one label set."""

  labels: tuple[str, ...]

  FRAMING = ('cls_id', 'sep_id')  # [CLS] sentence [SEP], as BERT.
  # tools.show: each word with /TAG at its first sub-token.
  SHOW = 'tagging'

  @property
  def label_to_id(self) -> dict[str, int]:
    return {tag: i for i, tag in enumerate(self.labels)}

  def build_model(self, model_cfg) -> heads.TokenClassifier:
    """The encoder with a per-token classifier over the label set."""
    return heads.TokenClassifier(model_cfg, num_labels=len(self.labels))

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, seed, shard, num_shards):
    """One row per record {'words', 'tags', 'idx'} of the stream (data/loader.py's hook).

    The rows hold encode_sentence's arrays, 'epoch' and 'example_id' (the record's index).
    Nothing is random, so `seed`, `docs` and the shard do not enter.
    """
    del objective_cfg, docs, seed, shard, num_shards  # One row per record, no draws.
    if seq_len < 3:
      raise ValueError(f'seq_len={seq_len} leaves no room between [CLS] and [SEP].')
    label_to_id = self.label_to_id

    def row(item: dict) -> dict:
      record = item['text']
      arrays = encode_sentence(record['words'], record['tags'], tokenizer, label_to_id, seq_len)
      return dict(arrays, epoch=np.int64(item['epoch']), example_id=np.int64(item['doc']))

    return stream.map(row)

  @staticmethod
  def make_preprocess(objective_cfg, tokenizer, seed: int):
    """Returns `preprocess(rows) -> batch`: the model's inputs, targets and weights.

    Batch: {'inputs', 'segment_ids', 'positions', 'token_types', 'targets' (tag ids),
    'word_numbers': [batch, length] int32, 'weights': [batch, length] float32 (first
    sub-tokens), 'example_id': [batch] int32 (-1 on the loader's padding rows)}.
    """
    del objective_cfg, tokenizer, seed  # Fine-tuning draws nothing on the host.

    def preprocess(rows: dict) -> dict:
      return dict(
        task_inputs.encoder_inputs(rows),
        targets=rows['labels'].astype(np.int32),
        weights=rows['label_weights'].astype(np.float32),  # Padding rows: all 0, no word.
        word_numbers=rows['word_numbers'].astype(np.int32),
      )

    return preprocess

  @staticmethod
  def logits(params, batch, rng, *, model) -> jax.Array:
    """[batch, length, labels] tag logits; `rng=None` runs without dropout."""
    return task_inputs.apply(params, batch, rng, model)

  def loss_fn(self, params, batch, rng, *, model):
    """Mean cross-entropy over the words' first sub-tokens; metrics loss and accuracy."""
    logits = self.logits(params, batch, rng, model=model)
    return metrics.token_cross_entropy(logits, batch['targets'], batch['weights'])

  def predict_fn(self, params, batch, *, model) -> dict:
    """{'tags': [batch, length] argmax tag ids, 'word_numbers': the batch's, passed on}."""
    logits = self.logits(params, batch, None, model=model)
    tags = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return {'tags': tags, 'word_numbers': batch['word_numbers']}

  def predicted_tags(self, outputs: dict, records: list) -> dict[int, list[str]]:
    """Record index -> its predicted word tags ('O' for words no row position labels)."""
    tags, numbers = np.asarray(outputs['tags']), np.asarray(outputs['word_numbers'])
    predicted = {}
    for row, example in enumerate(np.asarray(outputs['example_id']).tolist()):
      if example in predicted:
        raise ValueError(f'record {example} is predicted by two rows.')
      if not 0 <= example < len(records):
        raise ValueError(f'example_id {example} does not index the {len(records)} records.')
      words = ['O'] * len(records[example]['words'])
      first = np.flatnonzero(numbers[row] > 0)
      for word, tag in zip(numbers[row][first] - 1, tags[row][first], strict=True):
        words[word] = self.labels[tag]
      predicted[example] = words
    return predicted

  def decode_predictions(self, objective_cfg, outputs: dict, records: list) -> dict:
    """The gold and predicted word tags of the predicted sentences, for conlleval's
    entity-level scores.

    Args:
      objective_cfg: unused (the labels are the configured ones).
      outputs: predict_fn's 'tags', 'word_numbers' and the evaluation's 'example_id', one
        row per predicted record.
      records: the eval split's records {'words', 'tags', 'idx'}.

    Returns:
      {'metric': 'conll', 'gold': [[tag, ...] per sentence], 'predicted': [...]}, sentences
      in record order. Words a row does not label (cut off by seq_len) count as predicted
      'O'; records without a row (an evaluation cut short by eval_steps) are left out.
    """
    del objective_cfg
    return conll_decoded(records, self.predicted_tags(outputs, records))

  @staticmethod
  def eval_summary(values: dict[str, float]) -> dict[str, float]:
    return values


def configure(objective_cfg) -> Tagging:
  """Tagging over `objective.labels` (objectives/api.load calls this)."""
  return Tagging(labels=parse_labels(objective_cfg))
