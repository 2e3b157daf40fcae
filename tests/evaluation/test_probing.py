"""Per-layer probes (evaluation/probing.py with configs/probe.py, what eval.py runs for a
probing config): the states a probe reads equal independent forward passes truncated at
each layer, the control task is a function of the word type, probes learn what a linear
(or only an MLP) map can, and a probing run writes its table, picture and eval.json."""

import json
import os
import random

import numpy as np
import pytest

from configs import probe as probe_config
from data import conll
from evaluation import frozen_model, probing
from models import heads, transformer
from tests.training.test_finetune import write_sst2

# A toy grammar whose tags are functions of the word: determiner, noun, verb, adverb.
_WORDS = {
  'DT': ('the', 'a', 'this'),
  'NN': ('film', 'story', 'plot', 'people'),
  'VBZ': ('was', 'is', 'seems'),
  'RB': ('very', 'quite'),
}
_CHUNK = {'DT': 'B-NP', 'NN': 'I-NP', 'VBZ': 'B-VP', 'RB': 'B-ADVP'}


def _write_conll(directory, sentences: int, seed: int):
  rng = random.Random(seed)
  os.makedirs(directory, exist_ok=True)
  for name in ('train', 'valid'):
    lines = ['-DOCSTART- -X- -X- O', '']
    for _ in range(sentences):
      for tag in ('DT', 'NN', 'VBZ', 'RB', 'DT', 'NN')[: rng.randint(3, 6)]:
        word = rng.choice(_WORDS[tag])
        ner = 'B-MISC' if word == 'plot' else 'O'
        lines.append(f'{word} {tag} {_CHUNK[tag]} {ner}')
      lines.append('')
    (directory / f'{name}.txt').write_text('\n'.join(lines) + '\n')


def test_states_equal_forward_passes_truncated_at_each_layer(tiny_bert_checkpoint, tmp_path):
  path, cfg, params = tiny_bert_checkpoint
  _write_conll(tmp_path / 'conll', 6, seed=0)
  sentences = conll.read_conll(str(tmp_path / 'conll' / 'train.txt'), 'pos')
  model = frozen_model.load(path)
  labels = conll.label_list(sentences)
  data = probing.token_task_data(model, sentences, labels, seq_len=40, batch_size=4)
  words = [w for sentence, _ in sentences for w in sentence]
  assert data.words == words  # Every word once, in order (none is cut at 40 tokens).
  assert data.labels.tolist() == [labels.index(t) for _, tags in sentences for t in tags]
  assert data.features.shape == (cfg.num_layers + 1, len(words), cfg.d_model)

  encoded = probing.tagging.encode_sentence(
    sentences[0][0], sentences[0][1], model.tokenizer, {t: i for i, t in enumerate(labels)}, 40
  )
  first = encoded['label_weights'] > 0
  inputs = [encoded[k][None] for k in frozen_model.INPUTS]
  count = int(first.sum())
  # Layer 0: the embedding module alone; layer i: a model of the first i blocks.
  embed = transformer.Embed(cfg).apply(
    {'params': params['encoder']['embed']}, inputs[0], inputs[2], inputs[3], True
  )
  np.testing.assert_allclose(data.features[0, :count], np.asarray(embed)[0][first], atol=1e-5)
  for depth in range(1, cfg.num_layers + 1):
    kept = {k: v for k, v in params['encoder'].items() if not k.startswith('block_')}
    kept.update({f'block_{i}': params['encoder'][f'block_{i}'] for i in range(depth)})
    truncated = heads.Backbone(cfg.replace(num_layers=depth))
    hidden, _ = truncated.apply({'params': {'encoder': kept, 'pooler': params['pooler']}}, *inputs)
    np.testing.assert_allclose(
      data.features[depth, :count], np.asarray(hidden)[0][first], atol=1e-5
    )
  # Words past seq_len are left out, not half-read: 16 tokens keep a prefix of each sentence.
  cut = probing.token_task_data(model, sentences, labels, seq_len=16, batch_size=4)
  assert 0 < len(cut.words) < len(words) and cut.features.shape[1] == len(cut.words)
  assert cut.words[: len(sentences[0][0][:2])] == sentences[0][0][:2]


def test_control_labels_follow_the_word_type_and_the_label_distribution():
  train_words = ['a', 'b', 'a', 'c', 'b', 'a'] * 50
  train_labels = np.array([0, 1, 0, 2, 1, 0] * 50)
  train, evaluation = probing.control_labels(train_words, ['c', 'd', 'a'], train_labels, 3, seed=0)
  by_type = {}
  for word, label in zip(train_words, train, strict=True):
    assert by_type.setdefault(word, label) == label  # One label per type.
  assert evaluation[0] == by_type['c'] and evaluation[2] == by_type['a']
  again = probing.control_labels(train_words, ['c', 'd', 'a'], train_labels, 3, seed=0)
  np.testing.assert_array_equal(again[0], train)
  # Over many types the drawn labels follow the train distribution (1/2, 1/3, 1/6).
  types = [f'w{i}' for i in range(3000)]
  drawn, _ = probing.control_labels(types, [], train_labels, 3, seed=1)
  np.testing.assert_allclose(np.bincount(drawn) / 3000, [1 / 2, 1 / 3, 1 / 6], atol=0.03)


def test_a_linear_probe_reads_a_linear_layer_and_only_an_mlp_reads_xor():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 2))
  linear_labels = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
  xor_labels = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int32)
  layers = np.stack([x, rng.normal(size=(400, 2))])  # Layer 1: noise.
  settings = dict(steps=300, learning_rate=3e-2, weight_decay=0.0, mlp_dim=32, seed=0, batch=64)
  train, test = slice(0, 300), slice(300, 400)
  for labels, kind, expected in (
    (linear_labels, 'linear', (0.95, 0.65)),
    (xor_labels, 'mlp', (0.9, 0.65)),
  ):
    params = probing.train_probes(layers[:, train], labels[train], 2, kind=kind, **settings)
    accuracy = probing.accuracies(params, layers[:, test], labels[test])
    assert accuracy[0] >= expected[0] and accuracy[1] <= expected[1], (kind, accuracy)
  params = probing.train_probes(layers[:, train], xor_labels[train], 2, kind='linear', **settings)
  assert probing.accuracies(params, layers[:, test], xor_labels[test])[0] < 0.7


def test_a_probing_run_writes_the_table_the_picture_and_eval_json(tiny_bert_checkpoint, tmp_path):
  path, cfg, _ = tiny_bert_checkpoint
  _write_conll(tmp_path / 'conll', 30, seed=1)
  write_sst2(tmp_path / 'glue', 40, 20)
  config = probe_config.get_config('pos,ner,sst2')
  config.init_from = path
  config.data.conll_dir, config.data.glue_dir = str(tmp_path / 'conll'), str(tmp_path / 'glue')
  config.seq_len, config.probe.steps, config.probe.train_examples = 16, 60, 20
  workdir = str(tmp_path / 'probe')
  results = probing.run(config, workdir)

  report = json.load(open(os.path.join(workdir, 'eval.json')))
  assert report['task'] == 'probe' and report['checkpoint'].endswith('(converted)')
  assert set(report['probe']) == {'pos', 'ner', 'sst2'}
  for task, r in report['probe'].items():
    for name in ('linear', 'mlp', 'majority'):
      assert len(r[name]) == cfg.num_layers + 1 and all(0 <= a <= 1 for a in r[name])
    if task == 'sst2':  # Sentence-level: no word types, no control task.
      assert 'control_linear' not in r and r['items'] == {'train': 20, 'eval': 20}
    else:
      np.testing.assert_allclose(
        r['selectivity_linear'], np.subtract(r['linear'], r['control_linear']), atol=1e-12
      )
  # The toy grammar's tags are word identities: the embeddings give them away.
  assert results['pos']['linear'][0] > 0.9 and results['pos']['majority'][0] < 0.5
  table = open(os.path.join(workdir, 'probes.md')).read()
  assert table.count('| pos |') == cfg.num_layers + 1 and '| sst2 | 2 |' in table
  with open(os.path.join(workdir, 'probes.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_bad_probe_settings_are_named():
  with pytest.raises(ValueError, match=r"probe.tasks='pos,srl'"):
    probe_config.get_config('pos,srl')
  with pytest.raises(ValueError, match='tags_of'):
    conll.read_conll('unused', 'lemma')
  config = probe_config.get_config('pos')
  with pytest.raises(ValueError, match='needs --config.init_from'):
    probing.run(config, '/nonexistent')
