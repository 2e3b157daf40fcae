"""tools/attention.py and evaluation/attention_heads.py: Clark et al.'s per-head statistics
checked on distributions written out by hand, and the command's picture, page and numbers
for a small converted checkpoint, its statistics equal to those of an independent forward
pass of the full model."""

import json
import os

import numpy as np
import pytest

from data import tasks
from evaluation import attention_heads, frozen_model
from models import heads, intermediates
from tools import attention

TEXTS = [
  ('The cat sat on the mat.', None),
  ('It rained all day.', 'We stayed at home and read.'),
  ('Short.', None),
]


def test_statistics_of_hand_made_distributions():
  # One row: [CLS] a b [SEP] pad. Head 0 puts everything on the previous token ([CLS]
  # on itself); head 1 spreads evenly over the 4 real tokens.
  tokens = np.array([[101, 7, 8, 102, 0]])
  segment_ids = np.array([[1, 1, 1, 1, 0]])
  previous = np.zeros((5, 5))
  previous[0, 0] = 1.0
  for q in range(1, 5):
    previous[q, q - 1] = 1.0
  uniform = np.zeros((5, 5))
  uniform[:, :4] = 0.25
  layer = np.stack([previous, uniform])[None]  # [batch 1, heads 2, 5, 5]
  stats = attention_heads.HeadStatistics(cls_id=101, sep_id=102)
  stats.add([layer, layer], tokens, segment_ids)
  means = stats.means()
  assert means['cls'].shape == (2, 2)
  # Head 0: queries 0 and 1 look at [CLS] (2 of 4 real queries); nobody at [SEP] (query 4,
  # which would, is padding); the 3 queries with a previous token all look at it.
  np.testing.assert_allclose(means['cls'][:, 0], 0.5)
  np.testing.assert_allclose(means['sep'][:, 0], 0.0)
  np.testing.assert_allclose(means['previous'][:, 0], 1.0)
  np.testing.assert_allclose(means['next'][:, 0], 0.0)
  np.testing.assert_allclose(means['self'][:, 0], 0.25)
  np.testing.assert_allclose(means['entropy'][:, 0], 0.0, atol=1e-12)
  # Head 1: a quarter everywhere; entropy ln 4.
  for name in ('cls', 'sep', 'previous', 'next', 'self'):
    np.testing.assert_allclose(means[name][:, 1], 0.25)
  np.testing.assert_allclose(means['entropy'][:, 1], np.log(4))
  # A second batch, [CLS] [SEP]: both its queries look at [CLS] under head 0. It counts
  # by its 2 tokens (4 of 6 queries on [CLS]), not as an equal half ((0.5 + 1) / 2).
  stats.add([layer, layer], np.array([[101, 102, 0, 0, 0]]), np.array([[1, 1, 0, 0, 0]]))
  np.testing.assert_allclose(stats.means()['cls'][:, 0], 4 / 6)
  lines = attention_heads.describe_heads(means)
  assert lines[0].startswith('     cls: L') and 'sharpest: L0H0 entropy 0.00' in lines[-1]


def test_no_batch_and_bad_lines_are_errors(tmp_path):
  with pytest.raises(ValueError, match='No batch'):
    attention_heads.HeadStatistics(cls_id=1, sep_id=2).means()
  with pytest.raises(ValueError, match='No text'):
    attention.inspect('never-read', [], str(tmp_path / 'out'))
  assert tasks.read_texts(None, None, None) == []
  bad = tmp_path / 'texts.txt'
  bad.write_text('one\n\na\tb\tc\n')
  with pytest.raises(ValueError, match=r'texts.txt:3: 3 tab-separated fields'):
    tasks.read_texts(None, None, str(bad))
  bad.write_text('first\tsecond\n\nthird\n')
  assert tasks.read_texts('x', 'y', str(bad)) == [
    ('x', 'y'),
    ('first', 'second'),
    ('third', None),
  ]


def test_inspect_writes_the_picture_the_page_and_the_statistics(tiny_bert_checkpoint, tmp_path):
  path, cfg, params = tiny_bert_checkpoint
  out = str(tmp_path / 'out')
  stats = attention.inspect(path, TEXTS, out, seq_len=16, batch_size=2)  # Two batches.

  with open(os.path.join(out, 'attention.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  page = open(os.path.join(out, 'attention.html'), encoding='utf-8').read()
  assert page.count('<table class="m"') == 2 * 4  # Layers x heads.
  assert '<th>entropy</th>' in page and 'Layer 1' in page
  report = json.load(open(os.path.join(out, 'heads.json')))
  assert report['texts'] == 3 and report['checkpoint'].endswith('(converted)')
  assert set(report['statistics']) == set(attention_heads.STATISTICS)

  # The same statistics from the full model (Backbone, pooler included) applied here.
  model = frozen_model.load(path)
  batch = frozen_model.encode_texts(model, TEXTS, 16)
  _, kept = heads.Backbone(cfg).apply(
    {'params': params}, *(batch[k] for k in frozen_model.INPUTS), mutable=['attention_weights']
  )
  weights = [np.asarray(w) for w in intermediates.attention_weights(kept['attention_weights'])]
  expected = attention_heads.HeadStatistics(
    cls_id=model.tokenizer.cls_id, sep_id=model.tokenizer.sep_id
  )
  expected.add(weights, batch['tokens'], batch['segment_ids'])
  for name, values in expected.means().items():
    np.testing.assert_allclose(stats[name], values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(report['statistics'][name]), values, rtol=1e-5, atol=1e-6)
  # Rows of a pair: [CLS] a [SEP] b [SEP], padding after.
  row = batch['tokens'][1]
  assert row[0] == model.tokenizer.cls_id and np.sum(row == model.tokenizer.sep_id) == 2
  assert 0 < stats['cls'].min() and stats['entropy'].max() <= np.log(16)


def test_a_causal_model_reads_bos_then_the_text_and_its_pair(tiny_bert_checkpoint):
  path, cfg, _ = tiny_bert_checkpoint
  bert = frozen_model.load(path)
  gpt = frozen_model.FrozenModel(
    cfg.replace(causal=True), bert.params, 'encoder', bert.tokenizer, ''
  )
  tokenizer = bert.tokenizer
  rows = frozen_model.encode_texts(gpt, [('It rained.', 'We stayed in.')], 24)
  ids = [tokenizer.bos_id, *tokenizer.encode('It rained.'), *tokenizer.encode('We stayed in.')]
  n = len(ids)
  assert rows['tokens'][0, :n].tolist() == ids and not rows['tokens'][0, n:].any()
  assert rows['segment_ids'][0].tolist() == [1] * n + [0] * (24 - n)
  assert rows['positions'][0, :n].tolist() == list(range(n))
  cut = frozen_model.encode_texts(gpt, [('It rained.', 'We stayed in.')], 4)
  assert cut['tokens'][0].tolist() == ids[:4]
