"""Chinese task sources of data/tasks.py (FewCLUE, ChnSentiCorp, THUCNews) on fixtures in
the real layouts, the character split, configs/clue.py, and a short fine-tuning run."""

import json
import os
import random

import numpy as np
import pytest

from configs import clue as clue_config
from data import clue, tasks, tokenizers
from data.tokenizers import load_tokenizer
from tests.training import finetune_runs
from tests.training.test_finetune import tiny
from training import experiment

ZH = '/work/shared/data/zh'
_GOOD = '好棒赞爱美'
_BAD = '差烂坏糟脏'
_FILLER = '这个酒店房间服务我们很的了在是有也都'


def _review(rng: random.Random, positive: bool) -> str:
  """2-6 filler characters and two sentiment characters (one is too faint a signal
  for a 2-layer model to find within 40 steps)."""
  chars = rng.choices(_FILLER, k=rng.randint(2, 6))
  for _ in range(2):
    chars.insert(rng.randint(0, len(chars)), rng.choice(_GOOD if positive else _BAD))
  return ''.join(chars)


def write_fewclue(fewclue_dir, n: int = 6) -> None:
  """tnews (one text, labels 100..116) and bustm (pairs) as FewCLUE's JSON lines."""
  rng = random.Random(0)
  for task, files in (('tnews', clue.FEWCLUE_FILES), ('bustm', clue.FEWCLUE_FILES)):
    os.makedirs(os.path.join(fewclue_dir, task), exist_ok=True)
    for split, name in files.items():
      with open(os.path.join(fewclue_dir, task, name), 'w', encoding='utf-8') as f:
        for i in range(n + (split == 'dev')):
          if task == 'tnews':
            line = {'label': str(100 + i % 3), 'label_desc': 'news', 'sentence': _review(rng, 1),
                    'keywords': '', 'id': i}  # fmt: skip
          else:
            line = {'id': i, 'sentence1': _review(rng, 1), 'sentence2': _review(rng, 0),
                    'label': str(i % 2)}  # fmt: skip
          f.write(json.dumps(line, ensure_ascii=False) + '\n')


def write_chnsenticorp(folder, n_pos: int, n_neg: int, seed: int = 0) -> None:
  """The hotel-review CSV: header 'label,review', positives first, as the real file."""
  rng = random.Random(seed)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, tasks.CHNSENTICORP_FILE), 'w', encoding='utf-8') as f:
    f.write('label,review\n')
    for label, n in ((1, n_pos), (0, n_neg)):
      for _ in range(n):
        f.write(f'{label},"{_review(rng, bool(label))},不错"\n')


def write_thucnews(folder, n: int) -> None:
  """dev.txt / test.txt ('headline<TAB>class id') and class.txt, no train.txt (as shared)."""
  rng = random.Random(2)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'class.txt'), 'w', encoding='utf-8') as f:
    f.write('finance\nrealty\nsports')  # The real file has no trailing newline.
  for split in ('dev', 'test'):
    with open(os.path.join(folder, f'{split}.txt'), 'w', encoding='utf-8') as f:
      for i in range(n + (split == 'test')):
        f.write(f'{_review(rng, True)}\t{i % 3}\n')


def _data_cfg(source: str, folder, **keys):
  config = clue_config.get_config({'fewclue': 'tnews'}.get(source, source))
  config.data.clue_dir = str(folder)
  for key, value in keys.items():
    config.data[key] = value
  return config.data


def test_fewclue_reads_train_dev_and_other_splits(tmp_path):
  write_fewclue(tmp_path)
  data = _data_cfg('fewclue', tmp_path)
  assert tasks.eval_splits(data) == ['dev']
  train, dev = tasks.load_examples(data, 'train'), tasks.load_examples(data, 'eval')
  assert len(train) == 6 and len(dev) == 7
  assert [r['label'] for r in train[:4]] == [0, 1, 2, 0]  # '100', '101', '102' -> 0, 1, 2
  assert train[0]['text_b'] is None and train[0]['idx'] == 0
  assert len(tasks.load_examples(data, 'eval', 'test_public')) == 6
  data.task = 'bustm'
  pair = tasks.load_examples(data, 'eval')[1]
  assert pair['text_b'] and pair['label'] == 1
  data.clue_dir = ''
  with pytest.raises(ValueError, match='clue_dir'):
    tasks.load_examples(data, 'train')


def test_chnsenticorp_splits_partition_the_file_and_keep_the_label_ratio(tmp_path):
  write_chnsenticorp(tmp_path, 70, 30)
  data = _data_cfg('chnsenticorp', tmp_path)
  assert tasks.eval_splits(data) == ['dev']
  parts = {
    name: tasks.load_examples(data, 'train' if name == 'train' else 'eval', name)
    for name in ('train', 'dev', 'test')
  }
  assert {k: len(v) for k, v in parts.items()} == {'train': 80, 'dev': 10, 'test': 10}
  ids = sorted(r['idx'] for part in parts.values() for r in part)
  assert ids == list(range(100))  # Disjoint, and together the whole file.
  assert [r['idx'] for r in parts['dev']] == list(range(1, 100, 10))
  for part in parts.values():  # 70% positive in every split (the file is sorted by label).
    assert np.mean([r['label'] for r in part]) == pytest.approx(0.7)
  with pytest.raises(ValueError, match='split'):
    tasks.load_examples(data, 'eval', 'validation')


def test_thucnews_trains_on_dev_and_scores_test_without_train_file(tmp_path):
  write_thucnews(tmp_path, 9)
  data = _data_cfg('thucnews', tmp_path)
  assert tasks.eval_splits(data) == ['test'] and data.train_split == 'dev'
  train, test = tasks.load_examples(data, 'train'), tasks.load_examples(data, 'eval')
  assert len(train) == 9 and len(test) == 10 and test[4]['label'] == 1
  data.train_split, data.eval_split = 'train', ''
  assert tasks.eval_splits(data) == ['dev']
  with pytest.raises(FileNotFoundError, match="train_split='dev'"):
    tasks.load_examples(data, 'train')


def test_chinese_chars_give_one_piece_per_character_to_sentencepiece(tmp_path):
  """A SentencePiece model trained on Chinese merges characters into pieces; with
  data.chinese_chars each CJK character is a word of its own, hence of its own pieces.
  WordPiece splits CJK characters without the flag: both spellings encode the same."""
  write_chnsenticorp(tmp_path, 150, 150)
  rng = random.Random(5)
  words = ('酒店', '房间', '服务', '不错', '我们', '这个')  # Frequent words become pieces.
  corpus = [''.join(rng.choices(words, k=6)) + _review(rng, True) for _ in range(400)]
  spm_model = load_tokenizer(tokenizers.train_sentencepiece(corpus, str(tmp_path / 'zh'), 80, 400))
  plain = tasks.load_examples(_data_cfg('chnsenticorp', tmp_path), 'eval')
  split = tasks.load_examples(_data_cfg('chnsenticorp', tmp_path, chinese_chars=True), 'eval')
  assert split[0]['text_a'] == clue.chinese_char_split(plain[0]['text_a'])
  assert split[0]['label'] == plain[0]['label'] and split[0]['text_b'] is None

  def cjk_per_piece(record) -> list[int]:
    row = tasks.encode_pair(spm_model, record['text_a'], None, 64)
    ids = row['tokens'][1 : int(row['segment_ids'].sum()) - 1]  # Between [CLS] and [SEP].
    pieces = [spm_model.id_to_piece(i) for i in ids]
    return [sum('\u4e00' <= ch <= '\u9fff' for ch in p) for p in pieces]  # CJK per piece.

  assert max(n for r in plain for n in cjk_per_piece(r)) >= 2  # Merged characters.
  assert all(n <= 1 for r in split for n in cjk_per_piece(r))

  wordpiece = load_tokenizer(_chinese_vocab(tmp_path / 'vocab.txt'))
  for a, b in zip(plain, split, strict=True):
    row = tasks.encode_pair(wordpiece, a['text_a'], None, 64)
    again = tasks.encode_pair(wordpiece, b['text_a'], None, 64)
    np.testing.assert_array_equal(row['tokens'], again['tokens'])
    n = int(row['segment_ids'].sum())
    assert n == len(a['text_a']) + 2 and wordpiece.unk_id not in row['tokens'][:n]


@pytest.mark.parametrize('task', sorted(clue_config.TASKS))
def test_clue_config_label_counts_match_the_data(task):
  """num_labels of configs/clue.py against the label lists the shared files give."""
  config = clue_config.get_config(task)
  assert config.objective.task == task and config.benchmark == 'clue'
  experiment.size_epochs(config, clue_config.TASKS[task][2])  # The usual train split's size.
  assert config.total_steps >= clue_config.MIN_STEPS
  assert config.total_steps // config.eval_every_steps in range(18, 23)  # ~EVALS_PER_RUN.
  source = config.data.source
  folder = {'fewclue': 'FewCLUE', 'chnsenticorp': 'ChineseNlpCorpus', 'thucnews': 'THUCNews'}
  config.data.clue_dir = os.path.join(ZH, folder[source])
  if not os.path.isdir(config.data.clue_dir):
    pytest.skip(f'{config.data.clue_dir} is not here.')
  if source == 'fewclue':
    labels = clue.fewclue_labels(config.data.clue_dir, task)
  elif source == 'thucnews':
    labels = clue.read_thucnews(os.path.join(config.data.clue_dir, 'test.txt'))[1]
  else:
    labels = clue.CHNSENTICORP_LABELS
  assert config.objective.num_labels == len(labels)
  assert clue_config.TASKS[task][2] == len(tasks.load_examples(config.data, 'train'))


def _chinese_vocab(path) -> str:
  pieces = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '不', '错', ',', *_GOOD, *_BAD, *_FILLER]
  path.write_text('\n'.join(pieces) + '\n', encoding='utf-8')
  return str(path)


@pytest.mark.slow
def test_short_fine_tune_on_chinese_reviews_improves_dev_accuracy(tmp_path):
  """40 steps (batch 8) of configs/clue.py:chnsenticorp on a keyword-sentiment fixture with
  a character WordPiece vocabulary: dev accuracy climbs from chance."""
  folder = tmp_path / 'zh'
  write_chnsenticorp(folder, 240, 240)  # 384 train, 48 dev.
  config = tiny(clue_config.get_config('chnsenticorp'), _chinese_vocab(tmp_path / 'vocab.txt'),
                tmp_path, **{'data.clue_dir': str(folder)})  # fmt: skip
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 40, 20, 20
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 3e-3, 4
  config.optimizer.warmup_ratio = 0.0
  config.model.dropout_rate, config.log_every_steps = 0.0, 10
  workdir = str(tmp_path / 'run')
  before, result = finetune_runs.train_and_evaluate(config, workdir)
  assert result['examples'] == {'dev': 48} and result['benchmark'] == 'clue'
  assert result['scores']['chnsenticorp'] >= 0.85 > before['scores']['chnsenticorp'] + 0.2, (
    before,
    result,
  )
  assert result['reference'] is None and result['task'] == 'chnsenticorp'
