"""SQuAD v1.1 / v2.0: records, BERT's doc-stride features, and n-best answer decoding.

The feature creation follows Google BERT's run_squad.py (Devlin et al. 2019):

- The context is split on whitespace into words (char_to_word_offset maps each character to its
  word), each word is tokenized on its own (`tokenizer.encode(word)`), and every sub-token
  remembers its word.
- The question is cut to `max_query_length` tokens; the document tokens are cut into windows of
  at most `max_seq_length - len(question) - 3` tokens, each starting `doc_stride` tokens after the
  previous one, so that `[CLS] question [SEP] window [SEP]` fits `max_seq_length`. Token types are
  0 for [CLS] question [SEP] and 1 for the window and its [SEP].
- A training answer's word span becomes a sub-token span, tightened to the sub-tokens that spell
  the answer exactly (_improve_answer_span: "1895" inside "(1895-1943)"). A window that does not
  hold the whole answer, and any window of an unanswerable (v2.0) question, points at [CLS]:
  start = end = 0.
- A token seen by several windows is scored only in the window where it has the most context on
  both sides (_check_is_max_context: min(left, right) + 0.01 * window length).

`postprocess` is BERT's prediction writer: the n-best start and end logits of every window, kept
when both ends are document tokens, the start has max context, end >= start and the span is at
most `max_answer_length` tokens; the best start + end logit wins across windows. The answer text
is the original context words the span's sub-tokens belong to, joined by single spaces. BERT's
get_final_text goes one step further and trims those words back to the characters the
sub-tokens cover ("Denver's" -> "Denver" when only "denver" was predicted); that alignment is
not done here, so a span ending inside a word keeps the whole word. For v2.0 the null score is
the [CLS] start + end logit, its minimum over the windows, and the no-answer score of a question
is null score - best span score (the `null_odds.json` BERT writes).
"""

import json
from collections.abc import Sequence

import numpy as np

from data import text_decoding


def _answered(question_id: str, context: str, answers: list[str], starts: list[int]) -> None:
  """Checks that every answer lies inside the context where its offset says (-1: not
  located, an answer that is scored but never trained on)."""
  for text, start in zip(answers, starts, strict=True):
    if start != -1 and not 0 <= start <= start + len(text) <= len(context):
      raise ValueError(
        f'SQuAD question {question_id!r}: answer {text!r} at character {start} does not fit '
        f'in a context of {len(context)} characters.'
      )


def _record(qid, question, context, answers, starts, is_impossible, idx) -> dict:
  answers, starts = [str(a) for a in answers], [int(s) for s in starts]
  _answered(qid, context, answers, starts)
  return {
    'id': str(qid),
    'question': question,
    'context': context,
    'answers': answers,
    'answer_starts': starts,
    'is_impossible': bool(is_impossible),
    'idx': idx,
  }


def read_squad(path: str) -> list[dict]:
  """Reads an official SQuAD JSON file (train-v1.1.json, dev-v2.0.json, ...), or a CMRC 2018
  file in its competition layout (cmrc_records).

  Args:
    path: the JSON file ({'data': [{'paragraphs': [{'context', 'qas': [...]}]}]}).

  Returns:
    One record per question, in file order: {'id', 'question', 'context', 'answers' (texts),
    'answer_starts' (character offsets into the context), 'is_impossible' (v2.0; an empty answer
    list also counts as unanswerable), 'idx' (position in the list)}. v2.0's `plausible_answers`
    are not answers and are dropped.
  """
  with text_decoding.open_strict(path) as f:
    data = json.load(f)
  if isinstance(data, list) and data and isinstance(data[0], dict) and 'context_text' in data[0]:
    return cmrc_records(data)
  if not isinstance(data, dict) or 'data' not in data:
    raise ValueError(
      f'{path}: not a SQuAD file (expected a JSON object with a "data" list) nor a CMRC 2018 '
      'file (a list of {"context_text", "qas"}).'
    )
  records = []
  for article in data['data']:
    for paragraph in article['paragraphs']:
      context = paragraph['context']
      for qa in paragraph['qas']:
        answers = qa.get('answers', [])
        impossible = qa.get('is_impossible', False) or not answers
        records.append(
          _record(
            qa['id'],
            qa['question'],
            context,
            [] if impossible else [a['text'] for a in answers],
            [] if impossible else [a['answer_start'] for a in answers],
            impossible,
            len(records),
          )
        )
  return records


def _answer_text(value) -> str:
  """A CMRC answer as text: the files hold some numeric answers as JSON numbers (39764.0)."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


def cmrc_records(contexts: list) -> list[dict]:
  """SQuAD records of CMRC 2018's competition layout (Cui et al. 2019: a list of
  {'context_id', 'context_text', 'title', 'qas': [{'query_id', 'query_text', 'answers':
  [texts]}]}), whose answers come without offsets: each answer's offset is its first
  occurrence in the context, -1 when it does not occur verbatim (scored, never trained on);
  the located answers come first, so a question trains on a located one when it has one."""
  records = []
  for context in contexts:
    text = context['context_text']
    for qa in context['qas']:
      answers = [_answer_text(a) for a in qa.get('answers', [])]
      starts = [text.find(a) for a in answers]
      order = sorted(range(len(answers)), key=lambda i: starts[i] < 0)  # Stable: located first.
      records.append(
        _record(
          qa['query_id'],
          qa['query_text'],
          text,
          [answers[i] for i in order],
          [starts[i] for i in order],
          not answers,
          len(records),
        )  # fmt: skip
      )
  return records


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def from_tfds_example(example: dict, idx: int = 0) -> dict:
  """A record from one TFDS 'squad/v1.1' or 'squad/v2.0' example (NumPy form, bytes strings).

  Args:
    example: {'id', 'title', 'context', 'question', 'answers': {'text', 'answer_start'}} and,
      in some versions of squad/v2.0, 'is_impossible'; empty answers mean unanswerable.
    idx: the record's position in its split.
  """
  answers = [_text(t) for t in np.asarray(example['answers']['text']).reshape(-1)]
  starts = [int(s) for s in np.asarray(example['answers']['answer_start']).reshape(-1)]
  impossible = bool(example.get('is_impossible', False)) or not answers
  return _record(
    _text(example['id']),
    _text(example['question']),
    _text(example['context']),
    [] if impossible else answers,
    [] if impossible else starts,
    impossible,
    idx,
  )


def read_tfds(name: str, split: str, data_dir: str = '') -> list[dict]:
  """Records of a TFDS SQuAD split, e.g. read_tfds('squad/v1.1', 'validation')."""
  import tensorflow_datasets as tfds  # Heavy; only this reader needs it.

  dataset = tfds.load(name, split=split, data_dir=data_dir or None, shuffle_files=False)
  return [from_tfds_example(ex, i) for i, ex in enumerate(tfds.as_numpy(dataset))]


# ---------------------------------------------------------------------------------------------
# Features (BERT's convert_examples_to_features).
# ---------------------------------------------------------------------------------------------


def _is_whitespace(ch: str) -> bool:
  # BERT's run_squad also splits on U+202F (narrow no-break space), which str.isspace misses.
  return ch in ' \t\r\n' or ord(ch) == 0x202F


def is_cjk(ch: str) -> bool:
  """A CJK ideograph, as BERT's _is_chinese_char counts them (the CJK Unified Ideographs,
  their extensions and the compatibility ideographs)."""
  cp = ord(ch)
  return (
    0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
    or 0x2A700 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
    or 0x2F800 <= cp <= 0x2FA1F
  )  # fmt: skip


def context_words(context: str) -> tuple[list[str], list[int]]:
  """(words, char_to_word): the whitespace words of `context`, each CJK ideograph a word of
  its own (BERT's _tokenize_chinese_chars: Chinese has no spaces, so a CMRC context would
  otherwise be one word), and per character the index of the word it is in (whitespace
  belongs to the word before it, -1 before the first word)."""
  words, char_to_word, after_space = [], [], True
  for ch in context:
    if _is_whitespace(ch):
      after_space = True
    else:
      cjk = is_cjk(ch)
      if after_space or cjk or is_cjk(words[-1][-1]):
        words.append(ch)
      else:
        words[-1] += ch
      after_space = cjk
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def join_words(words: Sequence[str]) -> str:
  """Context words back as text: a space between two words, none next to a CJK ideograph
  ('the cat', '光荣和ω-force')."""
  out = ''
  for word in words:
    if out and not (is_cjk(out[-1]) or is_cjk(word[0])):
      out += ' '
    out += word
  return out


def _improve_answer_span(doc_ids, start: int, end: int, answer_ids) -> tuple[int, int]:
  """The tightest sub-token span inside [start, end] that tokenizes exactly as the answer."""
  answer_ids = list(answer_ids)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if list(doc_ids[new_start : new_end + 1]) == answer_ids:
        return new_start, new_end
  return start, end


def _windows(num_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `num_tokens` document tokens."""
  windows, start = [], 0
  while start < num_tokens:
    length = min(num_tokens - start, room)
    windows.append((start, length))
    if start + length == num_tokens:
      break
    start += min(length, doc_stride)
  return windows


def _max_context(windows: list[tuple[int, int]], current: int, position: int) -> bool:
  """Whether window `current` gives document token `position` its most context."""
  best_score, best_window = None, None
  for index, (start, length) in enumerate(windows):
    end = start + length - 1
    if not start <= position <= end:
      continue
    score = min(position - start, end - position) + 0.01 * length
    if best_score is None or score > best_score:
      best_score, best_window = score, index
  return best_window == current


def _answer_tokens(record: dict, char_to_word, words, word_first_token, num_tokens, doc_ids, enc):
  """The first answer's sub-token span (start, end) in the document, and whether its text was
  found where the offset points (BERT drops training questions whose answer was not)."""
  text, offset = record['answers'][0], record['answer_starts'][0]
  if offset < 0:  # Not located in the context (a CMRC answer): no training target.
    return 0, 0, False
  start_word = char_to_word[offset]
  end_word = char_to_word[offset + len(text) - 1]
  found = join_words(context_words(text)[0]) in join_words(words[start_word : end_word + 1])
  start = word_first_token[start_word]
  end = word_first_token[end_word + 1] - 1 if end_word + 1 < len(words) else num_tokens - 1
  return (*_improve_answer_span(doc_ids, start, end, enc(text)), found)


def features(
  record: dict,
  tokenizer,
  *,
  max_seq_length: int,
  doc_stride: int,
  max_query_length: int,
  train: bool,
) -> list[dict]:
  """The model rows of one question: one per doc-stride window, as BERT builds them.

  Args:
    record: a record of read_squad / from_tfds_example.
    tokenizer: data/tokenizers.py Tokenizer (encode, cls_id, sep_id, pad_id).
    max_seq_length: tokens per row, [CLS] question [SEP] window [SEP] and padding.
    doc_stride: document tokens between the starts of consecutive windows.
    max_query_length: question tokens kept.
    train: drop a question whose answer text is not at its offset (BERT skips it); otherwise
      such a question keeps its windows with `answer_found` False (no training target).

  Returns:
    Per window, NumPy arrays of length max_seq_length: 'tokens', 'segment_ids' (1 real, 0
    padding), 'positions', 'token_types', 'token_to_word' (context word of each document
    token, -1 elsewhere), 'max_context' (document tokens this window scores); and scalars
    'start_positions', 'end_positions' (the answer's tokens in the row; 0, the [CLS], if the
    window does not hold it or there is none), 'feature_index' (window number), 'answer_found'.
  """
  words, char_to_word = context_words(record['context'])
  encode = lambda text: [int(i) for i in tokenizer.encode(text)]  # noqa: E731
  question = encode(record['question'])[:max_query_length]
  room = max_seq_length - len(question) - 3
  if room <= 0:
    raise ValueError(
      f'max_seq_length={max_seq_length} leaves no room for the document after a question of '
      f'{len(question)} tokens; raise it or lower max_query_length={max_query_length}.'
    )
  doc_ids, token_word, word_first_token = [], [], []
  for w, word in enumerate(words):
    word_first_token.append(len(doc_ids))
    pieces = encode(word)
    doc_ids += pieces
    token_word += [w] * len(pieces)

  answerable = not record['is_impossible'] and bool(record['answers'])
  found = True
  if answerable:
    answer_start, answer_end, found = _answer_tokens(
      record, char_to_word, words, word_first_token, len(doc_ids), doc_ids, encode
    )
    if train and not found:
      return []

  windows = _windows(len(doc_ids), room, doc_stride)
  rows = []
  offset = len(question) + 2  # Where the window starts in the row.
  for index, (start, length) in enumerate(windows):
    ids = [tokenizer.cls_id, *question, tokenizer.sep_id, *doc_ids[start : start + length]]
    ids.append(tokenizer.sep_id)
    real = len(ids)
    tokens = np.full(max_seq_length, tokenizer.pad_id, np.int32)
    tokens[:real] = ids
    segment_ids = (np.arange(max_seq_length) < real).astype(np.int32)
    token_types = np.zeros(max_seq_length, np.int32)
    token_types[offset:real] = 1
    token_to_word = np.full(max_seq_length, -1, np.int32)
    token_to_word[offset : offset + length] = token_word[start : start + length]
    max_context = np.zeros(max_seq_length, bool)
    max_context[offset : offset + length] = [
      _max_context(windows, index, p) for p in range(start, start + length)
    ]
    start_position = end_position = 0
    if answerable and found and start <= answer_start and answer_end <= start + length - 1:
      start_position = answer_start - start + offset
      end_position = answer_end - start + offset
    rows.append(
      {
        'tokens': tokens,
        'segment_ids': segment_ids,
        'positions': np.arange(max_seq_length, dtype=np.int32) * segment_ids,
        'token_types': token_types,
        'token_to_word': token_to_word,
        'max_context': max_context,
        'start_positions': np.int32(start_position),
        'end_positions': np.int32(end_position),
        'feature_index': np.int32(index),
        'answer_found': bool(found),
      }
    )
  return rows


# ---------------------------------------------------------------------------------------------
# Predictions (BERT's write_predictions).
# ---------------------------------------------------------------------------------------------


def best_span(
  start_logits: np.ndarray,
  end_logits: np.ndarray,
  token_to_word: np.ndarray,
  max_context: np.ndarray,
  *,
  n_best_size: int = 20,
  max_answer_length: int = 30,
) -> tuple[float, int, int, int] | None:
  """The best valid span over a question's windows.

  Args:
    start_logits, end_logits: [windows, length].
    token_to_word: [windows, length] context word per document token, -1 elsewhere.
    max_context: [windows, length] True where the window scores the token.
    n_best_size: start and end candidates tried per window (the top logits).
    max_answer_length: longest span, in tokens.

  Returns:
    (score, window, start, end) with score = start + end logit, or None if no window has a
    valid span.
  """
  best = None
  for w in range(start_logits.shape[0]):
    starts = np.argsort(-start_logits[w], kind='stable')[:n_best_size]
    ends = np.argsort(-end_logits[w], kind='stable')[:n_best_size]
    for s in starts:
      if token_to_word[w, s] < 0 or not max_context[w, s]:
        continue
      for e in ends:
        if token_to_word[w, e] < 0 or e < s or e - s + 1 > max_answer_length:
          continue
        score = float(start_logits[w, s] + end_logits[w, e])
        if best is None or score > best[0]:
          best = (score, w, int(s), int(e))
  return best


def postprocess(
  records: Sequence[dict],
  logits: Sequence[tuple[np.ndarray, np.ndarray]],
  maps: Sequence[tuple[np.ndarray, np.ndarray]],
  *,
  n_best_size: int = 20,
  max_answer_length: int = 30,
  version_2: bool = False,
) -> tuple[dict[str, str], dict[str, float]]:
  """Answer texts (and v2.0 no-answer scores) from the windows' start and end logits.

  Args:
    records: the questions.
    logits: per record, (start_logits, end_logits), each [windows, length].
    maps: per record, (token_to_word, max_context), each [windows, length], as `features`
      gives them for those windows.
    n_best_size: start and end candidates per window.
    max_answer_length: longest answer, in tokens.
    version_2: also score the null answer.

  Returns:
    (predictions, no_answer_scores): id -> best non-null answer text ('' if no window has a
    valid span), and for v2.0 id -> null score - best span score (BERT's null_odds; +inf when
    there is no valid span); {} for v1.1. A v2.0 question is answered '' when its score is
    above the threshold (BERT's default 0.0; evaluation/task_metrics.best_thresholds tunes it).
  """
  predictions, no_answer = {}, {}
  for record, (start_logits, end_logits), (token_to_word, max_context) in zip(
    records, logits, maps, strict=True
  ):
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    best = best_span(
      start_logits,
      end_logits,
      np.asarray(token_to_word),
      np.asarray(max_context),
      n_best_size=n_best_size,
      max_answer_length=max_answer_length,
    )
    text = ''
    if best is not None:
      _, w, s, e = best
      words = context_words(record['context'])[0]
      text = join_words(words[token_to_word[w, s] : token_to_word[w, e] + 1])
    predictions[record['id']] = text
    if version_2:
      null = float(np.min(start_logits[:, 0] + end_logits[:, 0]))  # [CLS] of every window.
      no_answer[record['id']] = null - best[0] if best is not None else float('inf')
  return predictions, no_answer
