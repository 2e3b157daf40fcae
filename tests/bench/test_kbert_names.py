"""bench/kbert_names.py's task: dev names never in train, every name's polarity in the
knowledge file and equal to its sentences' labels."""

import csv
import os

from bench import kbert_names
from data import knowledge


def test_names_task_needs_the_knowledge_file(tmp_path):
  kbert_names.write_task(str(tmp_path), 40, 20)
  graph = knowledge.read_triples(str(tmp_path / 'kg.tsv'))
  polarity = {head[0]: tail == 'good films' for head, ((_, tail),) in graph.triples.items()}
  assert len(polarity) == 120 and 0 < sum(polarity.values()) < 120
  names = {}
  for split in ('train', 'dev'):
    with open(os.path.join(tmp_path, 'glue', 'SST-2', f'{split}.tsv')) as f:
      rows = list(csv.DictReader(f, delimiter='\t'))
    names[split] = {row['sentence'].split()[3] for row in rows}
    for row in rows:
      assert polarity[row['sentence'].split()[3]] == (row['label'] == '1')
  assert names['train'] and names['dev'] and not names['train'] & names['dev']
