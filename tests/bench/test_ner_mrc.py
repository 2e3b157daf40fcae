"""bench/ner_mrc.py's runs without training them: each run's config for CoNLL-2003 and
MSRA, from a checkpoint and from scratch, and the from-scratch character vocabulary (the
train split's characters and the queries', read from a fixture zip written here)."""

import argparse
import os

import pytest

from bench import ner_mrc
from data import msra, tokenizers
from objectives import mrc_ner
from tests.data.test_msra import _SENTENCES, _text, _write_zip


def _args(tmp_path, **overrides) -> argparse.Namespace:
  values = dict(dataset='msra', data_dir=str(tmp_path), init_from='', scratch_layers=2,
                scratch_width=128, workdir=str(tmp_path / 'bench'), steps=7, batch_size=4,
                seq_len=32, learning_rate=0.0, match_weight=0.1)  # fmt: skip
  return argparse.Namespace(**{**values, **overrides})


def test_runs_differ_only_in_their_head_and_query_room(tmp_path):
  args = _args(tmp_path)
  tagging = ner_mrc.configure(args, 'tagging', vocab_path='/v.txt')
  mrc = ner_mrc.configure(args, 'mrc', 10.0, '/v.txt')
  assert (tagging.objective.module, mrc.objective.module) == (
    'objectives.tagging',
    'objectives.mrc_ner',
  )
  assert (tagging.data.source, tagging.data.clue_dir, tagging.objective.task) == (
    'msra',
    str(tmp_path),
    'msra',
  )
  assert mrc.objective.mrc_positive_weight == 10.0 and mrc.objective.mrc_queries
  assert mrc.objective.mrc_match_weight == 0.1
  assert (tagging.seq_len, mrc.seq_len) == (32, 32 + ner_mrc.QUERY_ROOM['msra'])
  for c in (tagging, mrc):  # From scratch: the same small BERT, the vocabulary, 5e-4.
    assert (c.init_from, c.data.tokenizer_path, c.model.preset) == ('', '/v.txt', 'bert-tiny')
    assert (c.model.num_layers, c.model.d_model, c.model.num_heads, c.model.mlp_dim) == (
      2,
      128,
      2,
      512,
    )
    assert (c.total_steps, c.eval_every_steps, c.checkpoint_every_steps, c.batch_size) == (
      7,
      7,
      7,
      4,
    )
    assert c.optimizer.learning_rate == ner_mrc.SCRATCH_LR
  # From a checkpoint on CoNLL-2003: its tokenizer and preset, 5e-5, English query room.
  args = _args(tmp_path, dataset='conll', init_from='/ckpt')
  tagging, mrc = ner_mrc.configure(args, 'tagging'), ner_mrc.configure(args, 'mrc')
  assert (mrc.data.conll_dir, mrc.data.source, mrc.init_from) == (str(tmp_path), 'conll', '/ckpt')
  assert (tagging.data.tokenizer_path, tagging.model.preset, tagging.model.num_layers) == (
    '',
    'bert-base',
    None,
  )
  assert (tagging.seq_len, mrc.seq_len, mrc.optimizer.learning_rate) == (32, 48, 5e-5)
  assert (
    ner_mrc.configure(_args(tmp_path, learning_rate=1e-3), 'mrc').optimizer.learning_rate == 1e-3
  )


def test_scratch_vocabulary_holds_the_train_split_and_the_queries(tmp_path):
  # 12 sentences: valid is sentences 0 and 10, so '龙' (only in sentence 0) stays out.
  valid_only = (['龙', '飞'], ['O', 'O'])
  _write_zip(tmp_path / msra.ZIP_NAME, _text([valid_only, *(_SENTENCES * 3)[1:], _SENTENCES[0]]))
  args = _args(tmp_path)
  path = ner_mrc.character_vocab(args)
  assert path == os.path.join(args.workdir, 'vocab.txt')
  tok = tokenizers.load_tokenizer(path)
  train_chars = {ch for chars, _ in _SENTENCES for ch in chars}
  for text in [*train_chars, *mrc_ner.MSRA_QUERIES.values()]:
    assert tok.unk_id not in tok.encode(text).tolist(), text
  assert tok.encode('龙').tolist() == [tok.unk_id]
  assert tok.encode('张三').tolist() == [*tok.encode('张'), *tok.encode('三')]  # A piece each.
  assert len(tok.encode('张')) == 1
  before = os.stat(path).st_mtime_ns
  assert ner_mrc.character_vocab(args) == path and os.stat(path).st_mtime_ns == before  # Reused.
  with pytest.raises(FileNotFoundError):
    ner_mrc.character_vocab(_args(tmp_path / 'missing'))
