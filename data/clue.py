"""Chinese classification readers (FewCLUE, ChnSentiCorp, THUCNews) and per-character splitting.

Every reader returns `(records, labels)`: records shaped as data/glue.py's
{'text_a', 'text_b' (or None), 'label' (an index into labels, None when unlabelled), 'idx'},
and the task's label list (label strings as the files write them).

- FewCLUE (JSON lines, one folder per task): `train` = train_few_all.json, `dev` =
  dev_few_all.json, `test_public` = test_public.json (labelled); any other split name reads
  '<split>.json' (train_0 ... dev_4, test, unlabeled), whose records may have no label.
  CHID (pick an idiom among candidates) is multiple choice, not classification, and is not read.
- ChnSentiCorp (ChnSentiCorp_htl_all.csv): quoted CSV, header 'label,review', label 0/1.
- THUCNews headlines (dev.txt / test.txt): 'headline<TAB>class id', no header; the class
  names are the lines of class.txt beside them.
"""

import csv
import dataclasses
import os
import re

from data import jsonl, text_decoding
from data.wordpiece import CJK_RANGES

Record = dict  # {'text_a': str, 'text_b': str | None, 'label': int | None, 'idx': int}


@dataclasses.dataclass(frozen=True)
class FewClueTask:
  """Which JSON fields of a FewCLUE task make a record.

  Attributes:
    text_a, text_b: field names of the text(s) (text_b None: one text). CSL's text_a field
      is a list of keywords, joined with spaces; CLUEWSC builds text_a itself (see below).
    labels: label strings in id order (None: read from `label_file` in the task folder).
    label_file: a file of label names, one a line, in the task folder.
    id_field: field with the example id.
    skip_labels: labels of examples the reader drops (OCNLI '-': no annotator majority).
  """

  text_a: str
  text_b: str | None = None
  labels: tuple[str, ...] | None = None
  label_file: str | None = None
  id_field: str = 'id'
  skip_labels: tuple[str, ...] = ()


FEWCLUE_TASKS: dict[str, FewClueTask] = {
  # News titles, 15 classes coded 100..116 (105 and 111 unused), names in label_index2en2zh.json.
  'tnews': FewClueTask(
    'sentence', labels=tuple(str(c) for c in range(100, 117) if c not in (105, 111))
  ),
  # App descriptions, 119 classes coded 0..118 (names in the 'label_des' field).
  'iflytek': FewClueTask('sentence', labels=tuple(str(c) for c in range(119))),
  'eprstmt': FewClueTask('sentence', labels=('Negative', 'Positive')),
  'bustm': FewClueTask('sentence1', 'sentence2', labels=('0', '1')),
  'ocnli': FewClueTask(
    'sentence1', 'sentence2', labels=('entailment', 'neutral', 'contradiction'), skip_labels=('-',)
  ),
  # Is this keyword list the paper's? (keywords, abstract)
  'csl': FewClueTask('keyword', 'abst', labels=('0', '1')),
  'csldcp': FewClueTask('content', label_file='labels_all.txt'),
  # Does the pronoun (span2) refer to span1? The spans are marked inside the text.
  'cluewsc': FewClueTask('text', labels=('false', 'true'), id_field='idx'),
}
FEWCLUE_FILES = {'train': 'train_few_all.json', 'dev': 'dev_few_all.json', 'test_public': 'test_public.json'}  # fmt: skip


def fewclue_labels(fewclue_dir: str, task: str) -> list[str]:
  """The label list of a FewCLUE task (csldcp: read from <fewclue_dir>/csldcp/labels_all.txt)."""
  spec = _fewclue_task(task)
  if spec.labels is not None:
    return list(spec.labels)
  path = os.path.join(fewclue_dir, task, spec.label_file)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'FewCLUE {task}: no label file {path}.')
  with text_decoding.open_strict(path) as f:
    return [line.strip() for line in f if line.strip()]


def read_fewclue(fewclue_dir: str, task: str, split: str) -> tuple[list[Record], list[str]]:
  """Records and label list of a FewCLUE classification task split.

  Args:
    fewclue_dir: folder holding one folder per task (tnews/, iflytek/, ...).
    task: a key of FEWCLUE_TASKS.
    split: 'train', 'dev', 'test_public', or a file stem such as 'train_0' or 'unlabeled'.

  Raises:
    FileNotFoundError: the split's file is not there.
    ValueError: unknown task, a line that is not JSON, a missing field or an unknown label.
  """
  spec = _fewclue_task(task)
  labels = fewclue_labels(fewclue_dir, task)
  path = os.path.join(fewclue_dir, task, FEWCLUE_FILES.get(split, f'{split}.json'))
  if not os.path.isfile(path):
    raise FileNotFoundError(f'FewCLUE {task} {split}: no file {path}.')
  records = []
  for where, example in jsonl.jsonl_records(path):
    for name in (spec.text_a, spec.text_b):
      if name is not None and name not in example:
        raise ValueError(f'{where}: no field {name!r} (fields: {sorted(example)}).')
    label = example.get('label')
    if label is not None and str(label) in spec.skip_labels:
      continue
    records.append(
      {
        'text_a': _text_a(task, example, where),
        'text_b': example[spec.text_b] if spec.text_b else None,
        'label': None if label is None else _label_id(str(label), labels, where),
        'idx': int(example.get(spec.id_field, len(records))),
      }
    )
  return records, labels


def _fewclue_task(task: str) -> FewClueTask:
  if task == 'chid':
    raise ValueError('FewCLUE chid is multiple choice (an idiom among candidates); not read here.')
  if task not in FEWCLUE_TASKS:
    raise ValueError(f'Unknown FewCLUE task {task!r}; known: {sorted(FEWCLUE_TASKS)}.')
  return FEWCLUE_TASKS[task]


def _text_a(task: str, example: dict, where: str) -> str:
  if task == 'csl':
    return ' '.join(example['keyword'])
  if task == 'cluewsc':
    return _mark_wsc_spans(example, where)
  return example[FEWCLUE_TASKS[task].text_a]


def _mark_wsc_spans(example: dict, where: str) -> str:
  """CLUEWSC text with the candidate (span1) in _underscores_ and the pronoun (span2) in [ ]."""
  text, target = example['text'], example['target']
  spans = []
  for k, (left, right) in ((1, ('_', '_')), (2, ('[', ']'))):
    start, span = target[f'span{k}_index'], target[f'span{k}_text']
    if text[start : start + len(span)] != span:
      raise ValueError(f'{where}: span{k}_text {span!r} is not at span{k}_index {start}.')
    spans.append((start, start + len(span), left, right))
  # Insert from the right so the earlier span's offsets stay valid.
  for start, end, left, right in sorted(spans, reverse=True):
    text = text[:start] + left + text[start:end] + right + text[end:]
  return text


def _label_id(label: str, labels: list[str], where: str) -> int:
  if label not in labels:
    raise ValueError(f'{where}: label {label!r} is not one of {labels[:20]}.')
  return labels.index(label)


CHNSENTICORP_LABELS = ['0', '1']  # negative, positive


def read_chnsenticorp(path: str) -> tuple[list[Record], list[str]]:
  """ChnSentiCorp hotel reviews: a quoted CSV with header 'label,review' (label 0/1).

  Rows are kept as they are, an empty review included (the shared file has one).
  """
  with text_decoding.open_strict(path, 'utf-8-sig', newline='') as f:
    rows = list(csv.reader(f))
  if not rows or rows[0] != ['label', 'review']:
    raise ValueError(f'{path}: expected the header "label,review", got {rows[:1]}.')
  records = []
  for line_number, row in enumerate(rows[1:], 2):
    if len(row) != 2:
      raise ValueError(f'{path}: record {line_number}: {len(row)} fields, expected 2.')
    records.append(
      {
        'text_a': row[1],
        'text_b': None,
        'label': _label_id(row[0], CHNSENTICORP_LABELS, f'{path}: record {line_number}'),
        'idx': len(records),
      }
    )
  return records, list(CHNSENTICORP_LABELS)


def read_thucnews(path: str, class_path: str | None = None) -> tuple[list[Record], list[str]]:
  """THUCNews headlines: 'headline<TAB>class id' lines; labels are class.txt's lines.

  Args:
    path: dev.txt or test.txt.
    class_path: the class names file; by default class.txt in the same folder.
  """
  class_path = class_path or os.path.join(os.path.dirname(path), 'class.txt')
  if not os.path.isfile(class_path):
    raise FileNotFoundError(f'THUCNews: no class names file {class_path}.')
  with text_decoding.open_strict(class_path) as f:
    labels = [line.strip() for line in f if line.strip()]
  records = []
  with text_decoding.open_strict(path) as f:
    for line_number, line in enumerate(f, 1):
      line = line.rstrip('\r\n')
      if not line:
        continue
      text, tab, label = line.rpartition('\t')
      where = f'{path}:{line_number}'
      if not tab or not label.isdigit():
        raise ValueError(f'{where}: expected "headline<TAB>class id", got {line[:80]!r}.')
      if int(label) >= len(labels):
        raise ValueError(f'{where}: class id {label} but {class_path} names {len(labels)}.')
      records.append({'text_a': text, 'text_b': None, 'label': int(label), 'idx': len(records)})
  return records, labels


_CJK = re.compile('([' + ''.join(f'{chr(lo)}-{chr(hi)}' for lo, hi in CJK_RANGES) + '])')


def chinese_char_split(text: str) -> str:
  """Spaces around every CJK ideograph, as BERT's _tokenize_chinese_chars, so that a
  WordPiece or SentencePiece tokenizer sees Chinese one character per word.

  The spaces are added, never merged ('中文' -> ' 中  文 '), exactly as BERT; both
  tokenizers treat a run of spaces as one break.
  """
  return _CJK.sub(r' \1 ', text)
