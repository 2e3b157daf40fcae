"""Downstream-task examples as the loader's "documents", and BERT's sentence-pair encoding.

`load_examples(config.data, split)` returns the records of a task split (one record
per example, in file order); `sources.load_documents` hands them to the loader for
the task sources, so fine-tuning shards, shuffles, resumes and pads its last eval
batch exactly as pretraining does. The task objective's `make_rows` turns each
record into fixed-length rows (objectives/classification.py).

Sources (`data.source`):
  glue   `data.task` in data/glue.TASKS; files under `data.glue_dir` in the GLUE download
         script's layout, or TFDS `glue/<task>` when `glue_dir` is empty. Records
         {'text_a', 'text_b', 'label', 'idx'}.
  conll  CoNLL-2003 files `train.txt` / `valid.txt` / `test.txt` under `data.conll_dir`.
         Records {'words', 'tags', 'idx'}.
  squad  SQuAD JSON files `data.squad_file` / `data.eval_squad_file`, or TFDS
         `squad/v1.1` / `squad/v2.0` (`data.tfds_name`) when they are empty (data/squad.py).

The eval split is `data.eval_split` ('' takes the task's default: 'dev', MNLI's
'dev_matched', CoNLL's 'valid'); several comma-separated splits are evaluated one
after the other (MNLI matched and mismatched), the first choosing the best checkpoint.
"""

import os

import numpy as np

from data import glue

SOURCES = ('glue', 'conll', 'squad')
_DEFAULT_EVAL_SPLIT = {'glue': 'dev', 'conll': 'valid', 'squad': 'validation'}


def eval_splits(data_cfg) -> list[str]:
  """The task's evaluation splits, in order (the first one picks the best checkpoint)."""
  names = data_cfg.get('eval_split', '') or ''
  if names:
    return [name.strip() for name in names.split(',') if name.strip()]
  if data_cfg.source == 'glue' and data_cfg.task == 'mnli':
    return ['dev_matched']
  return [_DEFAULT_EVAL_SPLIT[data_cfg.source]]


def load_examples(data_cfg, split: str, eval_split: str | None = None) -> list[dict]:
  """Records of the 'train' or 'eval' split (`eval_split`: which one, default the first)."""
  source = data_cfg.source
  if source not in SOURCES:
    raise ValueError(f'data.source={source!r} is not a task source ({SOURCES}).')
  name = 'train' if split == 'train' else (eval_split or eval_splits(data_cfg)[0])
  if source == 'glue':
    if not data_cfg.get('task', ''):
      raise ValueError("data.source='glue' needs data.task, e.g. 'sst2' (configs/glue.py:sst2).")
    if data_cfg.glue_dir:
      return glue.read_glue(data_cfg.glue_dir, data_cfg.task, name)
    return glue.read_tfds(data_cfg.task, name, data_cfg.tfds_data_dir or None)
  if source == 'conll':
    from data import conll

    path = os.path.join(data_cfg.conll_dir, f'{name}.txt')
    return [
      {'words': words, 'tags': tags, 'idx': i}
      for i, (words, tags) in enumerate(conll.read_conll(path))
    ]
  from data import squad  # source == 'squad'

  path = data_cfg.squad_file if split == 'train' else data_cfg.eval_squad_file
  if path:
    return squad.read_squad(path)
  return squad.read_tfds(data_cfg.tfds_name or 'squad/v1.1', name, data_cfg.tfds_data_dir or None)


def truncate_pair(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
  """BERT's truncation: drop the last token of the longer sequence until both fit `budget`."""
  first, second = list(first), list(second)
  while len(first) + len(second) > budget:
    longer = first if len(first) > len(second) else second
    longer.pop()
  return first, second


def encode_pair(tokenizer, text_a: str, text_b: str | None, seq_len: int) -> dict:
  """[CLS] a [SEP] (b [SEP]) padded to `seq_len`, as BERT feeds a sentence (pair).

  Returns:
    {'tokens', 'segment_ids' (1 on real tokens, 0 on padding), 'positions',
    'token_types' (0 for [CLS] a [SEP], 1 for b [SEP])}, each [seq_len] int32.
  """
  ids_a = tokenizer.encode(text_a).tolist()
  ids_b = tokenizer.encode(text_b).tolist() if text_b is not None else []
  budget = seq_len - (3 if text_b is not None else 2)
  ids_a, ids_b = truncate_pair(ids_a, ids_b, budget)
  tokens = [tokenizer.cls_id, *ids_a, tokenizer.sep_id]
  types = [0] * len(tokens)
  if text_b is not None:
    tokens += [*ids_b, tokenizer.sep_id]
    types += [1] * (len(ids_b) + 1)
  n = len(tokens)
  row = {name: np.zeros(seq_len, np.int32) for name in ('tokens', 'segment_ids', 'positions')}
  row['token_types'] = np.zeros(seq_len, np.int32)
  row['tokens'][:n] = tokens
  row['segment_ids'][:n] = 1
  row['positions'][:n] = np.arange(n)
  row['token_types'][:n] = types
  return row
