"""Named entity recognition as machine reading comprehension (Li et al. 2020, "A Unified
MRC Framework for Named Entity Recognition"): one question per entity type, answered by
start and end positions in the sentence.

Each sentence is one loader row of T sub-rows, one per entity type t, [T, length]:
[CLS] query_t [SEP] sentence sub-tokens [SEP], the query a description of the type
(`objective.mrc_queries`, 'PER=...;LOC=...'; by default the annotation-guideline style
descriptions below), token types 0 for the query and 1 for the sentence. The sentence's
words are tokenized one by one, as objectives/tagging.py does; a word's first sub-token
carries its labels: start 1 if an entity of type t begins at the word, end 1 if one ends
there. The model is the encoder with one start and one end logit per token
(heads.SpanExtractor, the SQuAD head); the loss is the mean binary cross-entropy of the
start and the end logits over the words' first sub-tokens (several entities of a type may
be in one sentence, so each position is its own binary decision, not a softmax). Starts and
ends are rare (a few percent of a type's words), so `objective.mrc_positive_weight` (1: the
plain mean) multiplies the positive labels' terms, here and in the match loss below; the
means still divide by the words and the candidate pairs.

With `objective.mrc_match_weight` > 0 (the paper's full model) the head also scores every
(start, end) pair with Li et al.'s span-matching classifier (heads.SpanMatcher), trained by
binary cross-entropy on the candidate pairs, those whose start is a gold or predicted
start and whose end a gold or predicted end at or after it (words' first sub-tokens), the
gold spans positive; the loss adds `mrc_match_weight` x its mean.

Decoding (`decode_predictions`): per type, with the match head every word whose start
logit is positive takes the end at or after it with a positive end logit and a positive
match logit that scores best (end + match); without it (weight 0) each positive start
closes at the nearest positive end before the next start (Li et al.'s start-end
heuristic). Spans of all types are then kept greedily by score without overlap (CoNLL has
no nested entities) and written back as IOB2 tags, so the score is conlleval's entity F1,
the same as the tagging objective's. A sentence cut by seq_len
loses its last words, predicted 'O' and scored so. The entity types come from
`objective.labels` (objectives/tagging.py's key, the B-/I- suffixes).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from data import conll
from models import heads
from objectives import tagging
from objectives.shared import task_inputs

# Descriptions in the style of Li et al. 2020's queries (built from the annotation guidelines).
CONLL_QUERIES = {
  'PER': 'person: names of people, including fictional characters',
  'ORG': 'organization: companies, agencies, institutions, teams, political parties',
  'LOC': 'location: countries, cities, states, regions, mountains, rivers',
  'MISC': 'miscellaneous: nationalities, events, languages, works of art and other names',
}
# MSRA Chinese NER's types (configs/conll.py:msra,mrc passes them as objective.mrc_queries),
# our own short descriptions in the same style; at most 25 characters (BERT's Chinese
# WordPiece: a token each), so at seq_len 128 a 100-character sentence is never cut.
MSRA_QUERIES = {
  'PER': '人名：文中人物的姓名，包括中国人名和外国人名',
  'ORG': '机构名：公司、政府机关、学校、政党、团体等组织',
  'LOC': '地名：国家、省市、城镇、山脉、河流、湖泊等地理位置',
}
SUB_ROWS = ('tokens', 'segment_ids', 'positions', 'token_types', 'starts', 'ends', 'weights',
            'word_numbers', 'span_ends')  # fmt: skip


def config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.mrc_queries = ''  # 'TYPE=description;...' per entity type; '' is CONLL_QUERIES.
  c.mrc_match_weight = 1.0  # The span-matching loss's weight; 0: no match head (heuristic).
  c.mrc_positive_weight = 1.0  # Multiplies the gold starts' and ends' cross-entropy terms.
  return c


def parse_queries(objective_cfg, types: tuple[str, ...]) -> dict[str, str]:
  """{type: query text} for every entity type.

  Raises:
    ValueError: a malformed entry, or a type without a query.
  """
  queries = dict(CONLL_QUERIES)
  for entry in (e.strip() for e in objective_cfg.mrc_queries.split(';') if e.strip()):
    kind, sep, text = entry.partition('=')
    if not sep or not kind.strip() or not text.strip():
      raise ValueError(f'objective.mrc_queries: {entry!r} is not TYPE=description.')
    queries[kind.strip()] = text.strip()
  missing = [t for t in types if t not in queries]
  if missing:
    raise ValueError(f'objective.mrc_queries: no query for entity type(s) {missing}.')
  return {t: queries[t] for t in types}


def encode_query(words, tags, query_ids, kind: str, tokenizer, seq_len: int) -> dict:
  """One type's sub-row: [CLS] query [SEP] sentence [SEP] with the type's start and end
  labels at the words' first sub-tokens. Arrays [seq_len]."""
  pieces = [tokenizer.encode(word) for word in words]
  counts = np.array([len(p) for p in pieces], np.int64)
  ids = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
  word_ids = np.repeat(np.arange(len(words)), counts)  # [sub-tokens]
  offset = len(query_ids) + 2  # [CLS] query [SEP]
  room = seq_len - offset - 1
  if room < 1:
    raise ValueError(f'seq_len={seq_len} leaves no room for the sentence after a query of '
                     f'{len(query_ids)} tokens.')  # fmt: skip
  ids, word_ids = ids[:room], word_ids[:room]
  n = offset + len(ids) + 1
  tokens = np.zeros(seq_len, np.int32)
  tokens[:n] = np.concatenate([[tokenizer.cls_id], query_ids, [tokenizer.sep_id], ids,
                               [tokenizer.sep_id]])  # fmt: skip
  first = np.zeros(seq_len, bool)
  previous = np.concatenate([[-1], word_ids[:-1]])
  first[offset : offset + len(ids)] = word_ids != previous
  word_numbers = np.zeros(seq_len, np.int32)
  word_numbers[offset : offset + len(ids)] = np.where(first[offset : offset + len(ids)],
                                                      word_ids + 1, 0)  # fmt: skip
  starts, ends = np.zeros(seq_len, np.float32), np.zeros(seq_len, np.float32)
  span_ends = np.full(seq_len, -1, np.int32)  # At a gold start: its end's position.
  position_of_word = {int(w) - 1: p for p, w in enumerate(word_numbers) if w > 0}
  for chunk_kind, start, end in conll.entity_chunks(tags):
    if chunk_kind == kind and start in position_of_word:
      starts[position_of_word[start]] = 1.0
      if end - 1 in position_of_word:
        ends[position_of_word[end - 1]] = 1.0
        span_ends[position_of_word[start]] = position_of_word[end - 1]
  segment_ids = (np.arange(seq_len) < n).astype(np.int32)
  token_types = np.zeros(seq_len, np.int32)
  token_types[offset:n] = 1
  return {
    'tokens': tokens, 'segment_ids': segment_ids,
    'positions': np.arange(seq_len, dtype=np.int32) * segment_ids, 'token_types': token_types,
    'starts': starts, 'ends': ends, 'weights': first.astype(np.float32), 'word_numbers': word_numbers,
    'span_ends': span_ends,
  }  # fmt: skip


def spans(start_logits, end_logits, word_count: int) -> list[tuple[float, int, int]]:
  """(score, first word, last word) of one type's predicted entities from its per-word
  start and end logits [words] (NaN where a word has no logit): each positive start closes
  at the nearest positive end at or after it, before the next positive start."""
  found = []
  starts = [w for w in range(word_count) if start_logits[w] > 0]
  for i, s in enumerate(starts):
    limit = starts[i + 1] if i + 1 < len(starts) else word_count
    for e in range(s, limit):
      if end_logits[e] > 0:
        found.append((float(start_logits[s] + end_logits[e]), s, e))
        break
  return found


def tags_of(entities: list[tuple[float, str, int, int]], word_count: int) -> list[str]:
  """IOB2 tags of the best-scoring non-overlapping (score, type, first, last) entities."""
  tags = ['O'] * word_count
  for _, kind, first, last in sorted(entities, key=lambda e: (-e[0], e[2], e[1])):
    if all(tag == 'O' for tag in tags[first : last + 1]):
      tags[first] = f'B-{kind}'
      for w in range(first + 1, last + 1):
        tags[w] = f'I-{kind}'
  return tags


@dataclasses.dataclass(frozen=True)
class MachineReadingNER:
  types: tuple[str, ...]
  queries: tuple[str, ...]  # One per type, in order.
  match_weight: float = 1.0
  positive_weight: float = 1.0

  FRAMING = ('cls_id', 'sep_id')
  SHOW = 'queries'

  def build_model(self, model_cfg):
    return heads.SpanMatcher(model_cfg) if self.match_weight > 0 else heads.SpanExtractor(model_cfg)

  def make_rows(self, objective_cfg, stream, docs, tokenizer, *, seq_len, **unused):
    """One row per sentence: its T typed sub-rows stacked, [T, seq_len] each."""
    del objective_cfg, docs, unused
    query_ids = [np.asarray(tokenizer.encode(q), np.int32) for q in self.queries]

    def row(item: dict) -> dict:
      record = item['text']
      parts = [encode_query(record['words'], record['tags'], q, kind, tokenizer, seq_len)
               for q, kind in zip(query_ids, self.types, strict=True)]  # fmt: skip
      stacked = {name: np.stack([p[name] for p in parts]) for name in SUB_ROWS}
      return dict(stacked, epoch=np.int64(item['epoch']), example_id=np.int64(item['doc']))

    return stream.map(row)

  def make_preprocess(self, objective_cfg, tokenizer, seed: int):
    del objective_cfg, tokenizer, seed
    return lambda rows: dict(
      task_inputs.encoder_inputs(rows),
      starts=rows['starts'].astype(np.float32),
      ends=rows['ends'].astype(np.float32),
      weights=rows['weights'].astype(np.float32),
      word_numbers=rows['word_numbers'].astype(np.int32),
      span_ends=rows['span_ends'].astype(np.int32),
    )

  def logits(self, params, batch, rng, *, model):
    """(start, end) logits [batch, types, length], and with the match head its logits
    [batch, types, length, length]."""
    b, t, length = batch['inputs'].shape
    flat = {k: batch[k].reshape(b * t, length) for k in task_inputs.MODEL_INPUTS}
    out = task_inputs.apply(params, flat, rng, model)
    return tuple(o.reshape(b, t, *o.shape[1:]) for o in out)

  @staticmethod
  def _forward(length: int):
    """[start, end] bool: the pairs whose end is at or after their start."""
    return jnp.arange(length)[None, :] >= jnp.arange(length)[:, None]

  def _candidates(self, start, end, batch):
    """[batch, types, length, length] bool: the pairs the match loss trains on, a gold or
    predicted start i and a gold or predicted end j >= i, both words' first sub-tokens."""
    w = batch['weights'] > 0
    opens = w & ((batch['starts'] > 0) | (start > 0))
    closes = w & ((batch['ends'] > 0) | (end > 0))
    return opens[..., :, None] & closes[..., None, :] & self._forward(start.shape[-1])

  def loss_fn(self, params, batch, rng, *, model):
    """Mean binary cross-entropy of the start and end logits over the words' first
    sub-tokens, the gold starts' and ends' terms x mrc_positive_weight (+ mrc_match_weight
    x the match loss's mean over the candidate pairs, the gold pairs' terms x
    mrc_positive_weight too); metrics loss and start/end accuracy
    (sign right), match/loss and match/accuracy, as (sum, weight)."""
    start, end, *match = self.logits(params, batch, rng, model=model)
    w = batch['weights']
    total = jnp.sum(w)
    per = jnp.zeros_like(start)
    for logit, label in ((start, batch['starts']), (end, batch['ends'])):
      scale = jnp.where(label > 0, self.positive_weight, 1.0)
      per += scale * optax.sigmoid_binary_cross_entropy(logit, label)
    loss_sum = jnp.sum(0.5 * per * w)
    right = ((start > 0) == (batch['starts'] > 0)) & ((end > 0) == (batch['ends'] > 0))
    metrics = {'loss': (loss_sum, total), 'accuracy': (jnp.sum(right * w), total)}
    loss = loss_sum / jnp.maximum(total, 1.0)
    if match:
      pairs = self._candidates(start, end, batch).astype(jnp.float32)
      length = start.shape[-1]
      gold = (batch['span_ends'][..., :, None] == jnp.arange(length)).astype(jnp.float32)
      bce = optax.sigmoid_binary_cross_entropy(match[0], gold)
      bce *= jnp.where(gold > 0, self.positive_weight, 1.0)
      count = jnp.sum(pairs)
      match_sum = jnp.sum(bce * pairs)
      metrics['match/loss'] = (match_sum, count)
      metrics['match/accuracy'] = (jnp.sum(((match[0] > 0) == (gold > 0)) * pairs), count)
      loss += self.match_weight * match_sum / jnp.maximum(count, 1.0)
    return loss, metrics

  def loss_terms(self, objective_cfg) -> dict[str, float]:
    """The start/end loss + mrc_match_weight x the match loss (objectives/api.py)."""
    del objective_cfg
    return (
      {'loss': 1.0, 'match/loss': self.match_weight} if self.match_weight > 0 else {'loss': 1.0}
    )

  def predict_fn(self, params, batch, *, model) -> dict:
    """The start and end logits; with the match head, for each start position its best
    end (`match_end`, -1 if none: a positive end at or after it with a positive match
    logit, the highest end + match) and that span's score (start + end + match)."""
    start, end, *match = self.logits(params, batch, None, model=model)
    out = {'start_logits': start, 'end_logits': end, 'word_numbers': batch['word_numbers']}
    if match:
      ok = (
        self._forward(start.shape[-1])
        & (batch['weights'] > 0)[..., None, :]
        & (end > 0)[..., None, :]
        & (match[0] > 0)
      )
      score = jnp.where(ok, end[..., None, :] + match[0], -jnp.inf)  # [b, t, start, end]
      best = jnp.argmax(score, -1)
      found = jnp.any(ok, -1)
      out['match_end'] = jnp.where(found, best, -1)
      out['match_score'] = start + jnp.where(found, jnp.max(score, -1), 0.0)
    return out

  def decode_predictions(self, objective_cfg, outputs: dict, records: list) -> dict:
    """Gold and predicted IOB2 tags of the predicted sentences, for conlleval's F1."""
    del objective_cfg
    predicted = {}
    for row, example in enumerate(np.asarray(outputs['example_id']).tolist()):
      if not 0 <= example < len(records):
        raise ValueError(f'example_id {example} does not index the {len(records)} records.')
      count = len(records[example]['words'])
      entities = []
      for t, kind in enumerate(self.types):
        numbers = np.asarray(outputs['word_numbers'][row][t])
        at = np.flatnonzero(numbers > 0)
        start = np.full(count, np.nan)
        end = np.full(count, np.nan)
        start[numbers[at] - 1] = np.asarray(outputs['start_logits'][row][t])[at]
        end[numbers[at] - 1] = np.asarray(outputs['end_logits'][row][t])[at]
        if 'match_end' in outputs:  # The span-matching classifier's pairs.
          ends = np.asarray(outputs['match_end'][row][t])
          scores = np.asarray(outputs['match_score'][row][t])
          entities += [
            (float(scores[p]), kind, int(numbers[p]) - 1, int(numbers[ends[p]]) - 1)
            for p in at
            if start[numbers[p] - 1] > 0 and ends[p] >= 0
          ]
        else:
          entities += [(score, kind, s, e) for score, s, e in spans(start, end, count)]
      predicted[example] = tags_of(entities, count)
    return tagging.conll_decoded(records, predicted)

  @staticmethod
  def eval_summary(values: dict) -> dict:
    return values


def configure(objective_cfg) -> MachineReadingNER:
  labels = tagging.parse_labels(objective_cfg)
  types = tuple(dict.fromkeys(conll.split_tag(tag)[1] for tag in labels if tag != 'O'))
  queries = parse_queries(objective_cfg, types)
  for name in ('mrc_match_weight', 'mrc_positive_weight'):
    if objective_cfg[name] < 0:
      raise ValueError(f'objective.{name}={objective_cfg[name]} must be >= 0.')
  return MachineReadingNER(
    types,
    tuple(queries[t] for t in types),
    float(objective_cfg.mrc_match_weight),
    float(objective_cfg.mrc_positive_weight),
  )
