"""A fine-tuning task's own training text, as a plain-text corpus for task-adaptive pretraining.

  python -m tools.task_text --config configs/glue.py:sst2 \\
      --config.data.glue_dir=../shared/data/glue --out /tmp/sst2_text.txt

TAPT ("Don't Stop Pretraining", Gururangan et al. 2020, section 4) continues masked-LM
pretraining on the unlabelled text of the task's training set before fine-tuning. This writes
that text in the format `data.source='text'` reads (data/sources.read_text_documents): one
line per sentence, documents separated by a blank line, so that configs/dapt.py can train on it.

One document per training example (data/tasks.load_examples, labels dropped):
  glue   text_a, and text_b on a line of its own when the task has pairs.
  conll  the sentence's words joined by spaces.
  squad  each distinct context once, in order of first appearance (a context is shared by
         its questions; repeating it would weigh a paragraph by its question count). The
         questions are not written.
Only the 'train' split is written: TAPT never sees the evaluation text.
"""

from collections.abc import Iterable

from absl import app, flags
from ml_collections import config_flags

from data import tasks


def _one_line(text: str) -> str:
  """The text on a single line: a newline inside it would split the document's sentences
  where the data has none, and a blank line would end the document."""
  return ' '.join(text.split())


def task_documents(data_cfg, split: str = 'train') -> list[list[str]]:
  """The task's texts as documents, each a list of non-empty lines.

  Args:
    data_cfg: `config.data` of a task config (source 'glue', 'conll' or 'squad').
    split: 'train' (what TAPT uses) or 'eval'.

  Returns:
    One document per example (per distinct context for SQuAD), in file order; examples whose text is empty are skipped.
  """
  records = tasks.load_examples(data_cfg, split)
  source = data_cfg.source
  documents = []
  if source == 'glue':
    for record in records:
      lines = [_one_line(record['text_a'])]
      if record.get('text_b') is not None:
        lines.append(_one_line(record['text_b']))
      documents.append(lines)
  elif source == 'conll':
    documents = [[_one_line(' '.join(record['words']))] for record in records]
  elif source == 'squad':
    seen = set()
    for record in records:
      context = _one_line(record['context'])
      if context not in seen:  # A paragraph's questions share its context.
        seen.add(context)
        documents.append([context])
  else:
    raise ValueError(f'data.source={source!r} is not a task source ({tasks.SOURCES}).')
  return [[line for line in doc if line] for doc in documents if any(doc)]


def format_documents(documents: Iterable[list[str]]) -> str:
  """Documents in BERT's pretraining-text layout: lines, a blank line after each document."""
  return ''.join('\n'.join(doc) + '\n\n' for doc in documents)


def write_task_text(data_cfg, path: str, split: str = 'train') -> int:
  """Writes the task's texts to `path` (UTF-8); returns the number of documents."""
  documents = task_documents(data_cfg, split)
  if not documents:
    raise ValueError(f'the {split} split of data.source={data_cfg.source!r} holds no text.')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(format_documents(documents))
  return len(documents)


def _define_flags():
  config_flags.DEFINE_config_file('config', None, 'The task config, e.g. configs/glue.py:sst2.')
  flags.DEFINE_string('out', None, 'Text file to write.')
  flags.DEFINE_enum('split', 'train', ['train', 'eval'], 'Which split (TAPT uses train).')
  flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  del argv
  f = flags.FLAGS
  count = write_task_text(f.config.data, f.out, f.split)
  print(f'{count} documents of {f.config.data.source} {f.split} text written to {f.out}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
