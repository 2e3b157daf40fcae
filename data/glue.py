"""GLUE task readers: the TSV files of the GLUE download script, or TFDS examples.

Every reader returns records {'text_a': str, 'text_b': str | None, 'label', 'idx': int}:
`label` is an int index into the task's `labels` (a float for STS-B's similarity
score; None on test splits, whose files carry no labels). Label orders follow TFDS
(`glue/<task>` ClassLabel names), so records from files and from TFDS agree.

Files are laid out as the GLUE download script writes them: `<glue_dir>/<TASK>/<split>.tsv`
(CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI) and `<glue_dir>/diagnostic/diagnostic.tsv`
for AX. Quirks handled:

- the TSVs are not quoted (MRPC and SST-2 have lone '"' inside sentences), so they are read
  with csv.QUOTE_NONE: every tab is a field break and every quote is text;
- CoLA train/dev have no header (source, label, original label, sentence), its test has one;
- MRPC train/dev start with a UTF-8 byte-order mark and name columns 'Quality', '#1 String';
- MNLI has dev_matched / dev_mismatched (and test_matched / test_mismatched) instead of dev;
- QQP's train file has a few malformed lines (a question holding a line break, so too few
  fields): QQP skips lines whose field count differs from the header's and logs how many;
  every other task raises on such a line, naming file and line number.
"""

import csv
import dataclasses
import logging
import os

from data import text_decoding

# Unquoted tab-separated fields: a '"' is text, never a quote.
_TSV = dict(delimiter='\t', quoting=csv.QUOTE_NONE)
Record = dict  # {'text_a': str, 'text_b': str | None, 'label': int | float | None, 'idx': int}


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """Where one task's files are and which of their columns make a record.

  Attributes:
    directory: folder under glue_dir, as the GLUE download script names it.
    splits: split names; the file is '<split>.tsv' unless `file_names` says otherwise.
    text_a, text_b: column names of the text field(s) in the files (text_b None: one text).
    label_column: column holding the label in labelled splits.
    labels: label strings as they appear in the files, in TFDS ClassLabel order (None for
      a regression task).
    tfds_name: the TFDS builder name.
    tfds_text_a, tfds_text_b: TFDS feature names of the text field(s).
    index_column: column giving the example index, if any (else the data row number).
    headerless_columns: column names of splits whose files have no header line.
    headerless_splits: splits whose files have no header line.
    skip_malformed: skip (and count) lines whose field count differs from the header's.
    file_names: split -> file name, where it is not '<split>.tsv'.
  """

  directory: str
  splits: tuple[str, ...]
  text_a: str
  text_b: str | None
  label_column: str | None
  labels: tuple[str, ...] | None
  tfds_name: str
  tfds_text_a: str
  tfds_text_b: str | None
  index_column: str | None = 'index'
  headerless_columns: tuple[str, ...] = ()
  headerless_splits: tuple[str, ...] = ()
  skip_malformed: bool = False
  file_names: tuple[tuple[str, str], ...] = ()

  @property
  def is_regression(self) -> bool:
    return self.labels is None

  def file_name(self, split: str) -> str:
    return dict(self.file_names).get(split, f'{split}.tsv')


_SPLITS = ('train', 'dev', 'test')
_NLI = ('entailment', 'neutral', 'contradiction')
_BINARY = ('0', '1')

TASKS: dict[str, GlueTask] = {
  'cola': GlueTask(
    'CoLA', _SPLITS, 'sentence', None, 'label', _BINARY,  # unacceptable, acceptable
    'glue/cola', 'sentence', None,
    headerless_columns=('source', 'label', 'original_label', 'sentence'),
    headerless_splits=('train', 'dev'),
  ),
  'sst2': GlueTask(
    'SST-2', _SPLITS, 'sentence', None, 'label', _BINARY,  # negative, positive
    'glue/sst2', 'sentence', None,
  ),
  'mrpc': GlueTask(
    'MRPC', _SPLITS, '#1 String', '#2 String', 'Quality', _BINARY,  # not_equivalent, equivalent
    'glue/mrpc', 'sentence1', 'sentence2',
  ),
  'stsb': GlueTask(
    'STS-B', _SPLITS, 'sentence1', 'sentence2', 'score', None,
    'glue/stsb', 'sentence1', 'sentence2',
  ),
  'qqp': GlueTask(
    'QQP', _SPLITS, 'question1', 'question2', 'is_duplicate', _BINARY,  # not_duplicate, duplicate
    'glue/qqp', 'question1', 'question2', index_column='id', skip_malformed=True,
  ),
  'mnli': GlueTask(
    'MNLI',
    ('train', 'dev_matched', 'dev_mismatched', 'test_matched', 'test_mismatched'),
    'sentence1', 'sentence2', 'gold_label', _NLI,
    'glue/mnli', 'premise', 'hypothesis',
  ),
  'qnli': GlueTask(
    'QNLI', _SPLITS, 'question', 'sentence', 'label', ('entailment', 'not_entailment'),
    'glue/qnli', 'question', 'sentence',
  ),
  'rte': GlueTask(
    'RTE', _SPLITS, 'sentence1', 'sentence2', 'label', ('entailment', 'not_entailment'),
    'glue/rte', 'sentence1', 'sentence2',
  ),
  'wnli': GlueTask(
    'WNLI', _SPLITS, 'sentence1', 'sentence2', 'label', _BINARY,  # not_entailment, entailment
    'glue/wnli', 'sentence1', 'sentence2',
  ),
  # The diagnostic set: MNLI-style pairs, test only (labels are not distributed with GLUE).
  'ax': GlueTask(
    'diagnostic', ('test',), 'sentence1', 'sentence2', None, _NLI,
    'glue/ax', 'premise', 'hypothesis', file_names=(('test', 'diagnostic.tsv'),),
  ),
}  # fmt: skip

# Our split name -> TFDS split name.
TFDS_SPLITS = {
  'train': 'train',
  'dev': 'validation',
  'test': 'test',
  'dev_matched': 'validation_matched',
  'dev_mismatched': 'validation_mismatched',
  'test_matched': 'test_matched',
  'test_mismatched': 'test_mismatched',
}
TFDS_NAMES = {name: task.tfds_name for name, task in TASKS.items()}


def get_task(task: str) -> GlueTask:
  if task not in TASKS:
    raise ValueError(f'Unknown GLUE task {task!r}; known: {sorted(TASKS)}.')
  return TASKS[task]


def _check_split(name: str, task: GlueTask, split: str) -> None:
  if split not in task.splits:
    raise ValueError(f'GLUE task {name!r} has no split {split!r}; it has {list(task.splits)}.')


def read_glue(glue_dir: str, task: str, split: str) -> list[Record]:
  """Records of one GLUE task split, read from the download script's layout.

  Args:
    glue_dir: folder holding the task folders (CoLA/, SST-2/, ..., diagnostic/).
    task: a key of TASKS ('cola', 'sst2', 'mrpc', 'stsb', 'qqp', 'mnli', 'qnli', 'rte', 'wnli',
      'ax').
    split: one of the task's splits ('train', 'dev', 'test'; MNLI: 'dev_matched', ...).

  Returns:
    A list of records in file order.

  Raises:
    ValueError: unknown task/split, missing column, malformed line or unknown label.
    FileNotFoundError: the split's file is not there (the message gives the path).
  """
  spec = get_task(task)
  _check_split(task, spec, split)
  path = os.path.join(glue_dir, spec.directory, spec.file_name(split))
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f'GLUE {task} {split}: no file {path} (expected the GLUE download script layout '
      f'<glue_dir>/{spec.directory}/{spec.file_name(split)}).'
    )
  # utf-8-sig drops MRPC's byte-order mark, which would otherwise glue onto 'Quality'.
  with text_decoding.open_strict(path, 'utf-8-sig', newline='') as f:
    lines = [(n, row) for n, row in enumerate(csv.reader(f, **_TSV), 1) if row]
  if split in spec.headerless_splits:
    header = list(spec.headerless_columns)
  elif lines:
    header = lines.pop(0)[1]
  else:
    raise ValueError(f'{path}: empty file, expected a header line.')
  column = {name: i for i, name in enumerate(header)}
  labelled = spec.label_column is not None and not split.startswith('test')
  needed = [spec.text_a, spec.text_b] + ([spec.label_column] if labelled else [])
  for name in needed:
    if name is not None and name not in column:
      raise ValueError(f'{path}: no column {name!r} (columns: {header}).')
  index = column.get(spec.index_column) if spec.index_column else None

  records, skipped = [], 0
  for row_number, (line_number, row) in enumerate(lines):
    if len(row) != len(header):
      if spec.skip_malformed:
        skipped += 1
        continue
      raise ValueError(
        f'{path}:{line_number}: {len(row)} tab-separated fields, the header has {len(header)}.'
      )
    label = None
    if labelled:
      label = _parse_label(row[column[spec.label_column]], spec, f'{path}:{line_number}')
    records.append(
      {
        'text_a': row[column[spec.text_a]],
        'text_b': row[column[spec.text_b]] if spec.text_b else None,
        'label': label,
        'idx': int(row[index]) if index is not None else row_number,
      }
    )
  if skipped:
    logging.warning('%s: skipped %d malformed lines (wrong field count).', path, skipped)
  return records


def _parse_label(value: str, spec: GlueTask, where: str) -> int | float:
  if spec.is_regression:
    try:
      return float(value)
    except ValueError:
      raise ValueError(f'{where}: score {value!r} is not a number.') from None
  if value not in spec.labels:
    raise ValueError(f'{where}: label {value!r} is not one of {list(spec.labels)}.')
  return spec.labels.index(value)


def _text(value) -> str:
  # tfds.as_numpy yields bytes; tf.data eager tensors have .numpy().
  if hasattr(value, 'numpy'):
    value = value.numpy()
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def from_tfds_example(task: str, example: dict) -> Record:
  """The record of one TFDS `glue/<task>` example (a dict of its features).

  TFDS labels are already ClassLabel ids in TASKS' label order; test examples carry -1,
  which becomes None (STS-B: a float score, -1.0 on test).
  """
  spec = get_task(task)
  for name in (spec.tfds_text_a, spec.tfds_text_b, 'label', 'idx'):
    if name is not None and name not in example:
      raise ValueError(
        f'TFDS {spec.tfds_name} example has no feature {name!r} (features: {sorted(example)}).'
      )
  label = example['label']
  label = label.item() if hasattr(label, 'item') else label
  if spec.is_regression:
    label = None if label == -1 else float(label)
  else:
    label = None if label == -1 else int(label)
  return {
    'text_a': _text(example[spec.tfds_text_a]),
    'text_b': _text(example[spec.tfds_text_b]) if spec.tfds_text_b else None,
    'label': label,
    'idx': int(example['idx']),
  }


def read_tfds(task: str, split: str, data_dir: str | None = None) -> list[Record]:
  """Records of a GLUE task split through tensorflow_datasets (imported here, not at import).

  Needs `tensorflow_datasets` (not a project requirement) and the prepared data in
  `data_dir` (TFDS downloads it when the machine can reach the internet).
  """
  spec = get_task(task)
  _check_split(task, spec, split)
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
      'read_tfds needs tensorflow_datasets (pip install tensorflow-datasets); '
      'read_glue reads the GLUE TSV files without it.'
    ) from e
  dataset = tfds.load(spec.tfds_name, split=TFDS_SPLITS[split], data_dir=data_dir)
  return [from_tfds_example(task, example) for example in tfds.as_numpy(dataset)]
