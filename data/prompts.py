"""Prompts: a task's record as text with one answer slot, and a word per label to fill it.

One definition serves both ways a pretrained model reads a prompt:
  - a masked LM fills the slot with [MASK]s and scores each label's word at them
    (pattern-exploiting training, objectives/pet.py; Schick & Schütze 2021);
  - a causal LM reads the text before the slot and scores each label's word as its
    continuation (GPT-3-style few-shot evaluation, configs/fewshot.py and
    evaluation/fewshot.py; Brown et al. 2020).

A template holds '{text_a}' (and '{text_b}' in `pair_template`) and exactly one
'{answer}'. `PROMPTS[task].words[label]` is the answer of each label, in the label order of
data/glue.py and data/clue.py. The English templates follow GPT-3's appendix G where it has
one (RTE: "{premise}\\nquestion: {hypothesis} True or False?\\nanswer:"; MNLI as its ANLI:
True / Neither / False) and a plain "Question ... Answer:" form otherwise; their answers
are single pieces of BERT's uncased WordPiece vocabulary (PET scores one [MASK] per
piece). eprstmt (FewCLUE's e-commerce review sentiment) answers 差评 / 好评 ("a bad / good
review"), two characters each: two pieces in BERT's Chinese WordPiece, one in a
SentencePiece model trained on reviews.
"""

import dataclasses
import functools
import string

import numpy as np

from data import tasks

ANSWER = '{answer}'
FIELDS = ('text_a', 'text_b', 'answer')


@dataclasses.dataclass(frozen=True)
class Prompt:
  template: str  # One-text records: '{text_a}' and '{answer}'.
  pair_template: str  # Two-text records: '{text_a}', '{text_b}' and '{answer}'.
  words: tuple[str, ...]  # The answer of each label, in label order.


PROMPTS = {
  'sst2': Prompt('Review: {text_a}\nSentiment: {answer}', '', ('negative', 'positive')),
  'cola': Prompt(
    'Sentence: {text_a}\nQuestion: Is this sentence grammatical?\nAnswer: {answer}',
    '',
    ('no', 'yes'),
  ),
  'mrpc': Prompt(
    '',
    'Sentence 1: {text_a}\nSentence 2: {text_b}\nQuestion: Do both sentences mean the same '
    'thing?\nAnswer: {answer}',
    ('no', 'yes'),
  ),
  'qqp': Prompt(
    '',
    'Question 1: {text_a}\nQuestion 2: {text_b}\nQuestion: Do both questions ask the same '
    'thing?\nAnswer: {answer}',
    ('no', 'yes'),
  ),
  'mnli': Prompt(
    '',
    '{text_a}\nquestion: {text_b} True, False or Neither?\nanswer: {answer}',
    ('True', 'Neither', 'False'),
  ),
  'qnli': Prompt(
    '',
    'Question: {text_a}\nSentence: {text_b}\nQuestion: Does the sentence answer the question?'
    '\nAnswer: {answer}',
    ('yes', 'no'),
  ),
  'rte': Prompt(
    '', '{text_a}\nquestion: {text_b} True or False?\nanswer: {answer}', ('True', 'False')
  ),
  'wnli': Prompt(
    '', '{text_a}\nquestion: {text_b} True or False?\nanswer: {answer}', ('False', 'True')
  ),
  'eprstmt': Prompt('这是一条{answer}。{text_a}', '', ('差评', '好评')),
}


def get(task: str) -> Prompt:
  if task not in PROMPTS:
    raise ValueError(f'No prompt for task {task!r}; known: {sorted(PROMPTS)} (data/prompts.py).')
  return PROMPTS[task]


def fields(template: str) -> list[str]:
  """The template's fields in order; checks it names only FIELDS and '{answer}' once.

  Raises:
    ValueError: an unknown field, or not exactly one '{answer}'.
  """
  names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
  unknown = sorted(set(names) - set(FIELDS))
  if unknown:
    raise ValueError(f'Template {template!r}: unknown field(s) {unknown}; use {list(FIELDS)}.')
  if names.count('answer') != 1:
    raise ValueError(f'Template {template!r} must hold {ANSWER} exactly once.')
  return names


def chunks(template: str) -> list[tuple[str, str | None]]:
  """The template as (literal text, field or None) pairs, in order (string.Formatter's
  parse); '{{' and '}}' stand for braces."""
  fields(template)
  return [(literal, name) for literal, name, _, _ in string.Formatter().parse(template)]


def template_for(prompt, record: dict) -> str:
  """`pair_template` for a record with a second text, else `template`."""
  pair = record.get('text_b') is not None
  template = prompt.pair_template if pair else prompt.template
  if not template:
    kind = 'a second text' if pair else 'one text'
    raise ValueError(f'This record has {kind} but the prompt has no template for it.')
  return template


def causal_form(template: str, word: str = '') -> tuple[str, str]:
  """(context, continuation) for a causal LM: the text before '{answer}' without its
  trailing space, and the space (if any), the answer `word` and the text after the slot.
  'Review: {text_a}\\nSentiment: {answer}' -> ('Review: {text_a}\\nSentiment:', ' ' + word)."""
  fields(template)
  before, after = template.split(ANSWER)
  if any(name for _, name, _, _ in string.Formatter().parse(after)):
    raise ValueError(f'Template {template!r}: a causal LM needs the texts before {ANSWER}.')
  context = before.rstrip(' ')
  return context, before[len(context) :] + word + after


def encode_cloze(tokenizer, template: str, record: dict, answer_len: int, seq_len: int) -> dict:
  """[CLS] the filled template [SEP], padded to `seq_len`, its answer slot `answer_len` [MASK]s.

  The template's literal parts and the record's texts are encoded one by one and joined (a
  word never straddles two parts); when the row is too long, BERT's pair truncation
  (data/tasks.truncate_pair) shortens the texts, never the template or the slot.

  Returns:
    {'tokens', 'segment_ids' (1 on real tokens), 'positions', 'token_types' (all 0): [seq_len];
    'mask_positions': [answer_len], where the [MASK]s are}.

  Raises:
    ValueError: the template and the slot alone leave no room for a text token.
  """
  parts = []  # (field or None for literal text, ids)
  for name, ids in _template_parts(tokenizer, template):
    if name is None:
      parts.append((None, ids))
    elif name == 'answer':
      parts.append(('answer', [tokenizer.mask_id] * answer_len))
    else:
      if record.get(name) is None:
        raise ValueError(
          f'Template {template!r} reads {name} but record {record.get("idx")} has none.'
        )
      parts.append((name, tokenizer.encode(record[name]).tolist()))
  fixed = sum(len(ids) for name, ids in parts if name in (None, 'answer'))
  budget = seq_len - 2 - fixed  # [CLS] and [SEP].
  texts = {name: ids for name, ids in parts if name in ('text_a', 'text_b')}
  if budget < len(texts):
    raise ValueError(
      f"Template {template!r} with {answer_len} answer token(s) takes {fixed + 2} of the row's "
      f'{seq_len} tokens: no room for the text (raise seq_len or shorten the template).'
    )
  first, second = tasks.truncate_pair(texts.get('text_a', []), texts.get('text_b', []), budget)
  texts = {'text_a': first, 'text_b': second}
  tokens = [tokenizer.cls_id]
  for name, ids in parts:
    if name == 'answer':
      mask_positions = np.arange(len(tokens), len(tokens) + answer_len, dtype=np.int32)
    tokens += texts.get(name, ids)
  tokens.append(tokenizer.sep_id)
  row = tasks.padded_row(tokens, [0] * len(tokens), seq_len)
  row['mask_positions'] = mask_positions
  return row


@functools.lru_cache(maxsize=32)
def _template_parts(tokenizer, template: str) -> tuple:
  """((None, literal ids) or (field, None), ...) of a template, its literal text encoded
  once, not once per row."""
  parts = []
  for literal, name in chunks(template):
    if literal:
      parts.append((None, tuple(tokenizer.encode(literal).tolist())))
    if name:
      parts.append((name, None))
  return tuple(parts)


def answer_ids(tokenizer, words, template: str = '') -> np.ndarray:
  """[labels, answer_len] ids of each label's answer word, as the word reads in its slot:
  after the template's literal text just before '{answer}' (a SentencePiece word after a
  space starts with '▁', one glued to the text before it, as in Chinese, does not). Every
  word must encode to the same number of pieces, none of them unknown (a masked LM fills
  a fixed slot).

  Raises:
    ValueError: a word the vocabulary does not know, or words of different lengths.
  """
  context = ''
  if template:
    context = next(literal for literal, name in chunks(template) if name == 'answer')
  encoded = [_in_context(tokenizer, context, word) for word in words]
  for word, ids in zip(words, encoded, strict=True):
    if not ids or tokenizer.unk_id in ids:
      raise ValueError(f'Answer word {word!r} encodes to {ids}: unknown to the vocabulary.')
  if len({len(ids) for ids in encoded}) != 1:
    lengths = {word: len(ids) for word, ids in zip(words, encoded, strict=True)}
    raise ValueError(f'Answer words must encode to as many pieces each: {lengths}.')
  return np.asarray(encoded, np.int32)


def _in_context(tokenizer, context: str, word: str) -> list[int]:
  """The ids `word` adds after `context` (the word alone when the two merge into one
  piece, or there is no context)."""
  alone = tokenizer.encode(word).tolist()
  if not context or not word:
    return alone
  before = tokenizer.encode(context).tolist()
  joined = tokenizer.encode(context + word).tolist()
  if joined[: len(before)] != before:
    return alone
  return joined[len(before) :]
