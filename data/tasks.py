"""Downstream-task examples as the loader's "documents", and BERT's sentence-pair encoding.

`load_examples(config.data, split)` returns the records of a task split (one record
per example, in file order); `sources.load_documents` hands them to the loader for
the task sources, so fine-tuning shards, shuffles, resumes and pads its last eval
batch exactly as pretraining does. The task objective's `make_rows` turns each
record into fixed-length rows (objectives/classification.py).

Sources (`data.source`):
  glue          `data.task` in data/glue.TASKS; files under `data.glue_dir` in the GLUE download
                script's layout, or TFDS `glue/<task>` when `glue_dir` is empty. Records
                {'text_a', 'text_b', 'label', 'idx'}. A comma list of tasks
                ('mrpc,rte,stsb') is a multi-task set (MT-DNN, objectives/mtdnn.py), see below.
  conll         CoNLL-2003 files `train.txt` / `valid.txt` / `test.txt` under `data.conll_dir`.
                Records {'words', 'tags', 'idx'}.
  msra          MSRA Chinese NER, `data.clue_dir`/dh_msra.zip (data/msra.py): CoNLL's records,
                one character per word, 'idx' the sentence's index in the file; splits
                'train', 'valid' (every 10th of the bakeoff's train part) and 'test' (its
                test part), by sentence index.
  squad         SQuAD JSON files `data.squad_file` / `data.eval_squad_file`, or TFDS
                `squad/v1.1` / `squad/v2.0` (`data.tfds_name`) when they are empty (data/squad.py).
  fewclue       FewCLUE task `data.task` (tnews, iflytek, eprstmt, bustm, ocnli, csl, csldcp,
                cluewsc) under `data.clue_dir` (the folder holding tnews/, iflytek/, ...):
                train = train_few_all.json; eval splits 'dev' (dev_few_all.json, the default),
                'test_public' (labelled), or a file stem ('dev_0', ...).
  chnsenticorp  ChnSentiCorp hotel reviews, `data.clue_dir`/ChnSentiCorp_htl_all.csv: one file,
                split here by row number: 'test' = rows 0, 10, 20, ..., 'dev' = rows 1, 11,
                21, ..., 'train' = the other 80%. The file lists positives then negatives, so
                every split keeps the label ratio (no published split exists for this file).
  thucnews      THUCNews headlines under `data.clue_dir`: '<split>.txt' with class.txt beside
                it; eval 'dev' (default) or 'test'. The full release has train.txt (180k); the
                shared copy only dev.txt / test.txt, so configs/clue.py:thucnews trains on
                'dev' and evaluates on 'test' (`data.train_split`, read via .get, default
                'train', names the train file of the Chinese sources).
The Chinese sources give data/glue.py's record layout (data/clue.py). `data.chinese_chars`
(.get, default False) puts spaces around every CJK character of the texts
(data/clue.chinese_char_split), BERT's Chinese pre-tokenization, for a SentencePiece
vocabulary that would otherwise merge characters into pieces; BERT's WordPiece
(data/wordpiece.py) already splits CJK characters itself, so it needs no flag.

The eval split is `data.eval_split` ('' takes the task's default: 'dev', MNLI's
'dev_matched', CoNLL's 'valid'); several comma-separated splits are evaluated one
after the other (MNLI matched and mismatched), the first choosing the best checkpoint.

Multi-task GLUE (`data.task='mrpc,rte,stsb'`): the train split is the tasks' train
records concatenated in list order, each tagged with 'task' (its index in the list);
the loader's per-epoch shuffle of the concatenation then mixes the tasks in
proportion to their sizes. Eval splits are per task, 'rte:dev' (by default every
task's dev split(s); a plain 'dev' in `data.eval_split` means each task's 'dev'), and
each one's records carry the same 'task' tag.
"""

import os

import numpy as np

from data import atomic_files, clue, conll, glue, msra, squad

CLUE_SOURCES = ('fewclue', 'chnsenticorp', 'thucnews')
SOURCES = ('glue', 'conll', 'msra', 'squad', *CLUE_SOURCES)
_DEFAULT_EVAL_SPLIT = {
  'glue': 'dev',
  'conll': 'valid',
  'msra': 'valid',
  'squad': 'validation',
  'fewclue': 'dev',
  'chnsenticorp': 'dev',
  'thucnews': 'dev',
}
CHNSENTICORP_FILE = 'ChnSentiCorp_htl_all.csv'
# ChnSentiCorp rows by row number modulo this: remainder 0 -> test, 1 -> dev, else train.
CHNSENTICORP_EVERY = 10


def task_names(data_cfg) -> list[str]:
  """The task(s) of `data.task`: one name, or several for a multi-task set ('mrpc,rte')."""
  return [name.strip() for name in (data_cfg.task or '').split(',') if name.strip()]


def is_multitask(data_cfg) -> bool:
  return data_cfg.source == 'glue' and len(task_names(data_cfg)) > 1


def _glue_default_splits(task: str) -> list[str]:
  return ['dev_matched', 'dev_mismatched'] if task == 'mnli' else ['dev']


def eval_splits(data_cfg) -> list[str]:
  """The task's evaluation splits, in order (the first one picks the best checkpoint).

  A multi-task set names each split 'task:split' ('rte:dev'), by default every task's dev
  split(s) in the order of `data.task`.
  """
  names = data_cfg.eval_split or ''
  names = [name.strip() for name in names.split(',') if name.strip()]
  if is_multitask(data_cfg):
    tasks = task_names(data_cfg)
    if not names:
      return [f'{task}:{split}' for task in tasks for split in _glue_default_splits(task)]
    qualified = []
    for name in names:
      qualified += [name] if ':' in name else [f'{task}:{name}' for task in tasks]
    return qualified
  if names:
    return names
  if data_cfg.source == 'glue' and data_cfg.task == 'mnli':
    return ['dev_matched']
  return [_DEFAULT_EVAL_SPLIT[data_cfg.source]]


def load_examples(data_cfg, split: str, eval_split: str | None = None) -> list[dict]:
  """Records of the 'train' or 'eval' split (`eval_split`: which one, default the first).

  With `data.train_per_label` = k > 0 the train split is k records of
  each label, drawn by `data.subset_seed` (few_shot); with `data.train_records` (a file)
  it is the records at the positions the file lists (read_positions: an active-learning
  round's labelled set, tools/active_learning.py). The eval splits stay whole.

  Raises:
    ValueError: train_per_label on a source without a class label per record; both
      subsets asked for; a listed position outside the train split.
  """
  per_label = data_cfg.train_per_label if split == 'train' else 0
  listed = data_cfg.train_records if split == 'train' else ''
  if per_label and (data_cfg.source not in ('glue', *CLUE_SOURCES) or is_multitask(data_cfg)):
    raise ValueError(
      f'data.train_per_label={per_label} draws per class label: a single GLUE or Chinese '
      f'classification task, not data.source={data_cfg.source!r} (data.task={data_cfg.task!r}).'
    )
  if per_label and listed:
    raise ValueError(
      f'data.train_per_label={per_label} and data.train_records={listed!r} both choose the '
      'train records: set one.'
    )
  records = _split_records(data_cfg, split, eval_split)
  if listed:
    return select_positions(records, read_positions(listed), listed)
  return few_shot(records, per_label, data_cfg.subset_seed) if per_label else records


def read_listed(path: str, parse, what: str) -> list:
  """`parse(text)` of every line of `path`, '#' comments and blank lines ignored (the
  value files read_positions and data/curriculum.read_scores read).

  Raises:
    ValueError: a line `parse` rejects (ValueError), naming the file, line and `what`.
  """
  values = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      text = line.split('#', 1)[0].strip()
      if not text:
        continue
      try:
        values.append(parse(text))
      except ValueError:
        raise ValueError(f'{path}:{number}: {line.strip()!r} is not {what}.') from None
  return values


def _position(text: str) -> int:
  if not text.isdigit():
    raise ValueError(text)
  return int(text)


def read_positions(path: str) -> list[int]:
  """The record positions (0-based, in the split's file order) listed in `path`: one integer
  per line, '#' comments and blank lines ignored.

  Raises:
    ValueError: a line that is not a non-negative integer, or a position listed twice.
  """
  positions = read_listed(path, _position, 'a record position (0, 1, ...)')
  if len(set(positions)) != len(positions):
    seen, twice = set(), set()
    for p in positions:
      (twice if p in seen else seen).add(p)
    raise ValueError(f'{path}: positions listed more than once: {sorted(twice)[:10]}.')
  return positions


def write_positions(path: str, positions, comment: str = '') -> None:
  """Writes `positions` for read_positions, atomically (a killed writer leaves no half file)."""
  header = ''.join(f'# {line}\n' for line in comment.splitlines())
  atomic_files.write_text(path, header + ''.join(f'{int(p)}\n' for p in positions))


def select_positions(records: list[dict], positions: list[int], source: str) -> list[dict]:
  """The records at `positions`, in file order.

  Raises:
    ValueError: an empty list, or a position past the split's end.
  """
  if not positions:
    raise ValueError(f'{source}: lists no record; a train split needs at least one.')
  outside = [p for p in positions if p >= len(records)]
  if outside:
    raise ValueError(
      f"{source}: positions {outside[:10]} are past the train split's {len(records)} records."
    )
  return [records[p] for p in sorted(positions)]


def _split_records(data_cfg, split: str, eval_split: str | None) -> list[dict]:
  source = data_cfg.source
  if source not in SOURCES:
    raise ValueError(f'data.source={source!r} is not a task source ({SOURCES}).')
  name = 'train' if split == 'train' else (eval_split or eval_splits(data_cfg)[0])
  if source == 'glue':
    if is_multitask(data_cfg):
      return _multitask_examples(data_cfg, name)
    if not data_cfg.task:
      raise ValueError("data.source='glue' needs data.task, e.g. 'sst2' (configs/glue.py:sst2).")
    return _glue_examples(data_cfg, data_cfg.task, name)
  if source in CLUE_SOURCES:
    if split == 'train':
      name = data_cfg.train_split or 'train'
    records = _clue_examples(data_cfg, source, name)
    if data_cfg.chinese_chars:
      records = [
        dict(
          r,
          text_a=clue.chinese_char_split(r['text_a']),
          text_b=None if r['text_b'] is None else clue.chinese_char_split(r['text_b']),
        )
        for r in records
      ]
    return records
  if source == 'conll':
    path = os.path.join(data_cfg.conll_dir, f'{name}.txt')
    return [
      {'words': words, 'tags': tags, 'idx': i}
      for i, (words, tags) in enumerate(conll.read_conll(path))
    ]
  if source == 'msra':
    if not data_cfg.clue_dir:
      raise ValueError(
        f"data.source='msra' reads {msra.ZIP_NAME} from data.clue_dir, e.g. "
        '../shared/data/zh/ChineseNlpCorpus (configs/conll.py:msra).'
      )
    sentences = msra.read_msra(os.path.join(data_cfg.clue_dir, msra.ZIP_NAME))
    return [
      {'words': sentences[i][0], 'tags': sentences[i][1], 'idx': i}
      for i in msra.split_indices(len(sentences), name)
    ]
  path = data_cfg.squad_file if split == 'train' else data_cfg.eval_squad_file
  if path:
    return squad.read_squad(path)
  return squad.read_tfds(data_cfg.tfds_name or 'squad/v1.1', name, data_cfg.tfds_data_dir or None)


def few_shot(records: list[dict], per_label: int, seed: int) -> list[dict]:
  """`per_label` records of every label, drawn without replacement as a function of (the
  records, `seed`) alone, kept in file order: a few-shot train set (PET, configs/pet.py)."""
  return [records[i] for i in few_shot_positions(records, per_label, seed)]


def few_shot_positions(records: list[dict], per_label: int, seed: int) -> list[int]:
  """few_shot's draw as positions into `records`, ascending.

  Raises:
    ValueError: unlabelled or regression records, or a label with fewer records.
  """
  by_label: dict = {}
  for i, record in enumerate(records):
    label = record.get('label')
    if label is None or isinstance(label, float):
      raise ValueError(
        f'data.train_per_label={per_label}: record {record.get("idx")} has label {label!r}; '
        'drawing per label needs class labels (not a test split, not a regression).'
      )
    by_label.setdefault(label, []).append(i)
  rng = np.random.default_rng(seed)
  chosen = []
  for label in sorted(by_label):
    pool = by_label[label]
    if len(pool) < per_label:
      raise ValueError(
        f'data.train_per_label={per_label}: label {label} has only {len(pool)} train records.'
      )
    chosen += rng.choice(pool, size=per_label, replace=False).tolist()
  return sorted(chosen)


def _glue_examples(data_cfg, task: str, split: str) -> list[dict]:
  if data_cfg.glue_dir:
    return glue.read_glue(data_cfg.glue_dir, task, split)
  return glue.read_tfds(task, split, data_cfg.tfds_data_dir or None)


def _multitask_examples(data_cfg, name: str) -> list[dict]:
  """The train records of every task (name 'train'), or one task's eval split ('rte:dev'),
  each record tagged with 'task': the task's index in `data.task`."""
  tasks = task_names(data_cfg)
  if name == 'train':
    pairs = [(task, 'train') for task in tasks]
  else:
    task, colon, split = name.partition(':')
    if not colon or task not in tasks:
      raise ValueError(
        f'Multi-task eval split {name!r} must be "task:split" with a task of data.task={tasks}.'
      )
    pairs = [(task, split)]
  return [
    dict(record, task=tasks.index(task))
    for task, split in pairs
    for record in _glue_examples(data_cfg, task, split)
  ]


def _clue_examples(data_cfg, source: str, split: str) -> list[dict]:

  directory = data_cfg.clue_dir or ''
  if not directory:
    raise ValueError(
      f'data.source={source!r} reads its files from data.clue_dir (configs/clue.py), e.g. '
      '../shared/data/zh/FewCLUE, ../shared/data/zh/ChineseNlpCorpus or ../shared/data/zh/THUCNews.'
    )
  if source == 'fewclue':
    if not data_cfg.task:
      raise ValueError("data.source='fewclue' needs data.task, e.g. 'tnews'.")
    return clue.read_fewclue(directory, data_cfg.task, split)[0]
  if source == 'thucnews':
    path = os.path.join(directory, f'{split}.txt')
    if not os.path.isfile(path):
      raise FileNotFoundError(
        f'THUCNews {split}: no file {path} (the shared copy has only dev.txt and test.txt: '
        "train with data.train_split='dev' and evaluate with data.eval_split='test')."
      )
    return clue.read_thucnews(path)[0]
  # chnsenticorp: one file, split by row number.
  remainder = {'test': 0, 'dev': 1}
  if split not in (*remainder, 'train'):
    raise ValueError(f"ChnSentiCorp split {split!r}: use 'train', 'dev' or 'test'.")
  records = clue.read_chnsenticorp(os.path.join(directory, CHNSENTICORP_FILE))[0]
  if split == 'train':
    return [r for r in records if r['idx'] % CHNSENTICORP_EVERY not in remainder.values()]
  return [r for r in records if r['idx'] % CHNSENTICORP_EVERY == remainder[split]]


def truncate_pair(first: list[int], second: list[int], budget: int) -> tuple[list[int], list[int]]:
  """BERT's truncation: drop the last token of the longer sequence until both fit `budget`."""
  first, second = list(first), list(second)
  while len(first) + len(second) > budget:
    longer = first if len(first) > len(second) else second
    longer.pop()
  return first, second


def read_texts(text: str | None, text_b: str | None, path: str | None) -> list[tuple]:
  """[(text, second text or None)]: `text` (with `text_b`) first, then the lines of the
  file at `path`, one text a line, a tab between the two sentences of a pair (blank lines
  skipped); the inspection tools' --text, --text_b and --texts_file.

  Raises:
    ValueError: a line with more than two tab-separated fields.
  """
  texts = [(text, text_b or None)] if text else []
  if path:
    with open(path, encoding='utf-8') as f:
      for number, line in enumerate(f, 1):
        line = line.rstrip('\n')
        if not line.strip():
          continue
        parts = line.split('\t')
        if len(parts) > 2:
          raise ValueError(f'{path}:{number}: {len(parts)} tab-separated fields; at most 2.')
        texts.append((parts[0], parts[1] if len(parts) == 2 else None))
  return texts


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
  return padded_row(tokens, types, seq_len)


def padded_row(tokens: list[int], token_types: list[int], seq_len: int) -> dict:
  """{'tokens', 'segment_ids' (1 on real tokens, 0 on padding), 'positions',
  'token_types'}, each [seq_len] int32, of a row's real tokens padded on the right."""
  n = len(tokens)
  row = {name: np.zeros(seq_len, np.int32) for name in ('tokens', 'segment_ids', 'positions')}
  row['token_types'] = np.zeros(seq_len, np.int32)
  row['tokens'][:n] = tokens
  row['segment_ids'][:n] = 1
  row['positions'][:n] = np.arange(n)
  row['token_types'][:n] = token_types
  return row
