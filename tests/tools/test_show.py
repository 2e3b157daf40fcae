"""Tests of tools/show.py on the quickstart config (embedded corpus, 1000-piece vocabulary)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from configs import quickstart
from data import tokenizers
from tools import show as show_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH_KEYS = {'inputs', 'targets', 'weights', 'segment_ids', 'positions'}
HEADER = re.compile(
  r'example (\d+) \(batch (\d+), row (\d+)\): (\d+) segments?, (\d+) predicted positions?'
)
NUM = 12  # Rows shown: 12 x 128 tokens, ~230 predicted MLM positions.


def _config(causal: bool = False):
  c = quickstart.get_config()
  c.data.vocab_size = 1000
  c.batch_size = 8  # NUM rows span two batches.
  if causal:
    c.model.preset = 'gpt2-tiny'
    c.objective.module = 'objectives.clm'
  return c


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('show'))


@pytest.fixture(scope='module')
def tokenizer(workdir):
  show_lib.show(_config(), workdir, num_examples=1)  # Trains the tokenizer once.
  return tokenizers.load_tokenizer(os.path.join(workdir, 'tokenizer', 'spm.model'))


def _records(lines):
  records = [json.loads(line) for line in lines]
  assert [r['example'] for r in records] == list(range(len(lines)))
  return records


def test_mlm_json_rows_hold_the_batch(workdir, tokenizer):
  records = _records(show_lib.show(_config(), workdir, NUM, as_json=True))
  assert len(records) == NUM
  total_weight = total_candidates = 0
  for r in records:
    assert BATCH_KEYS | {'tokens', 'targets_pieces'} <= set(r)
    assert all(len(r[k]) == 128 for k in BATCH_KEYS | {'tokens', 'targets_pieces'})
    assert all(isinstance(w, float) for w in r['weights'])
    assert all(isinstance(i, int) for k in BATCH_KEYS - {'weights'} for i in r[k])
    inputs, targets = np.array(r['inputs']), np.array(r['targets'])
    weights, tokens = np.array(r['weights']), np.array(r['tokens'])
    assert list(tokens) == [tokenizer.id_to_piece(i) for i in inputs]
    assert r['targets_pieces'] == [tokenizer.id_to_piece(i) for i in targets]
    # Every corrupted position is predicted, and [MASK] appears nowhere else.
    assert weights[inputs != targets].all()
    np.testing.assert_array_equal(tokens == '[MASK]', (inputs == tokenizer.mask_id))
    assert weights[tokens == '[MASK]'].all()
    assert not np.isin(targets[weights > 0], tokenizer.special_ids).any()
    total_weight += weights.sum()
    total_candidates += (~np.isin(targets, tokenizer.special_ids)).sum()
  # ~1500 candidates: the 15% rate has a standard deviation under 1%.
  assert 0.11 < total_weight / total_candidates < 0.19


def test_mlm_plain_output_marks_the_json_positions(workdir, tokenizer):
  records = _records(show_lib.show(_config(), workdir, NUM, as_json=True))
  lines = show_lib.show(_config(), workdir, NUM)
  assert lines[0].startswith('# objectives.mlm on the train split')
  headers = [(i, HEADER.match(line)) for i, line in enumerate(lines) if HEADER.match(line)]
  assert len(headers) == NUM
  bounds = [i for i, _ in headers] + [len(lines)]
  for n, ((start, match), r) in enumerate(zip(headers, records, strict=True)):
    body = lines[start + 1 : bounds[n + 1]]
    inputs, targets = np.array(r['inputs']), np.array(r['targets'])
    weights, segment_ids = np.array(r['weights']), np.array(r['segment_ids'])
    assert int(match.group(1)) == n and int(match.group(2)) == n // 8
    assert int(match.group(4)) == len(set(segment_ids[segment_ids > 0])) == len(body)
    assert int(match.group(5)) == int(weights.sum())
    masked = (weights > 0) & (inputs == tokenizer.mask_id)
    assert f'({masked.sum()} [MASK], ' in lines[start]
    text = '\n'.join(body)
    assert text.count('[MASK→') == masked.sum()
    assert text.count('[MASK]') == 0  # No unmarked mask token.
    shown = re.findall(r'\[MASK→([^\]]*)\]', text)
    expected = [tokenizer.id_to_piece(t).lstrip('▁') or '▁' for t in targets[masked]]
    assert shown == expected
    assert all(line.split(': ', 1)[1].startswith('[CLS]') for line in body)


def test_clm_rows(workdir, tokenizer):
  records = _records(show_lib.show(_config(causal=True), workdir, NUM, as_json=True))
  lines = show_lib.show(_config(causal=True), workdir, NUM)
  assert lines[0].startswith('# objectives.clm on the train split')
  headers = [HEADER.match(line) for line in lines if HEADER.match(line)]
  assert len(headers) == len(records) == NUM
  for match, r in zip(headers, records, strict=True):
    inputs, targets = np.array(r['inputs']), np.array(r['targets'])
    weights, segment_ids = np.array(r['weights']), np.array(r['segment_ids'])
    assert len(inputs) == 128 and r['tokens'][0] == '<s>'
    np.testing.assert_array_equal(targets[:-1], inputs[1:])
    real = segment_ids > 0
    assert int(weights.sum()) == real.sum() - len(set(segment_ids[real]))  # All but the last.
    assert int(match.group(5)) == int(weights.sum())
  body = [line for line in lines if line.startswith('  segment ')]
  assert len(body) == sum(int(m.group(4)) for m in headers)
  assert all(': <s>' in line and 'predicted' in line for line in body)


def test_denoising_rows_show_encoder_input_and_decoder_target(workdir, tokenizer):
  config = _config()
  config.model.preset, config.objective.module = 'bart-base', 'objectives.denoising'
  records = _records(show_lib.show(config, workdir, 4, as_json=True))
  lines = show_lib.show(config, workdir, 4)
  assert lines[0].startswith('# objectives.denoising on the train split')
  headers = [HEADER.match(line) for line in lines if HEADER.match(line)]
  assert len(headers) == len(records) == 4
  for match, r in zip(headers, records, strict=True):
    inputs, targets = np.array(r['inputs']), np.array(r['targets'])
    segment_ids = np.array(r['segment_ids'])
    assert int(match.group(5)) == int((segment_ids > 0).sum())  # The decoder writes them all.
    changed = (inputs != targets) & (segment_ids > 0)
    assert 0 < changed.sum() < 0.3 * (segment_ids > 0).sum()  # ~15% selected, most changed.
    assert r['decoder_inputs'][0] == tokenizer.eos_id
  body = [line for line in lines if line.startswith('  segment ')]
  encoder = [line for line in body if ' encoder (' in line]
  decoder = [line for line in body if ' decoder (' in line]
  assert len(encoder) == len(decoder) == sum(int(m.group(4)) for m in headers)
  assert any('<mask>' in line or '[MASK]' in line for line in encoder), encoder[:2]
  assert all(': <s>' in line for line in decoder)


def test_eval_split_differs_from_train(workdir, tokenizer):
  train = _records(show_lib.show(_config(), workdir, 2, as_json=True))
  held_out = _records(show_lib.show(_config(), workdir, 2, as_json=True, split='eval'))
  assert len(held_out) == 2
  assert held_out[0]['targets'] != train[0]['targets']


def test_command_line(workdir, tokenizer):
  cmd = [sys.executable, '-m', 'tools.show', '--config', 'configs/quickstart.py']
  cmd += ['--config.data.vocab_size=1000', '--num_examples=2', '--json', f'--workdir={workdir}']
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = _records(proc.stdout.strip().splitlines())
  assert len(records) == 2 and BATCH_KEYS <= set(records[0])


def test_span_corruption_names_its_sentinels_in_order(workdir, tokenizer):
  config = _config()
  config.model.preset, config.objective.module = 't5-small', 'objectives.span_corruption'
  with config.unlocked():
    config.objective.noise_density, config.objective.mean_noise_span_length = 0.15, 3.0
    config.objective.num_sentinels = 0
  lines = show_lib.show(config, workdir, 3)
  pairs = [line for line in lines if line.startswith('  segment ')]
  encoder = [line for line in pairs if ' encoder (' in line]
  decoder = [line for line in pairs if ' decoder (' in line]
  for enc, dec in zip(encoder, decoder, strict=True):
    numbers = [int(n) for n in re.findall(r'<extra_id_(\d+)>', enc)]
    # Sentinels appear in order in the encoder, and the decoder writes the same ones.
    assert numbers == list(range(len(numbers))) and len(numbers) > 0, enc
    assert [int(n) for n in re.findall(r'<extra_id_(\d+)>', dec)] == numbers


# Fine-tuning rows: CoNLL tagging and SQuAD windows on fixtures, WordPiece vocabularies.
_CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""
_SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']


def _tiny_task(config, tmp_path, vocab):
  (tmp_path / 'vocab.txt').write_text('\n'.join(_SPECIAL + vocab) + '\n', encoding='utf-8')
  config.data.tokenizer_path = str(tmp_path / 'vocab.txt')
  config.model.preset = 'bert-tiny'
  config.batch_size = 8
  return config


def test_tagging_rows_show_each_labelled_word_with_its_tag(tmp_path, monkeypatch):
  from configs import conll
  from objectives import tagging

  monkeypatch.setattr(tagging.Tagging, 'SHOW', 'tagging')
  for split in ('train', 'valid'):
    (tmp_path / f'{split}.txt').write_text(_CONLL, encoding='utf-8')
  vocab = ['EU', 're', '##jects', 'German', '.', 'Peter', 'Black', '##burn']
  config = _tiny_task(conll.get_config(), tmp_path, vocab)
  config.data.conll_dir, config.seq_len = str(tmp_path), 16
  lines = show_lib.show(config, str(tmp_path / 'run'), 2, split='eval')
  assert 'tag of its first sub-token' in lines[0]
  assert lines[1:] == [
    'example 0 (batch 0, row 0): example id 0, 7 tokens, 4 labelled words',
    '  [CLS] EU/B-ORG rejects/O German/B-MISC ./O [SEP]',
    'example 1 (batch 0, row 1): example id 1, 5 tokens, 2 labelled words',
    '  [CLS] Peter/B-PER Blackburn/I-PER [SEP]',
  ]
  records = _records(show_lib.show(config, str(tmp_path / 'run'), 2, as_json=True, split='eval'))
  assert 'targets_pieces' not in records[0]  # Tag ids are no vocabulary pieces.
  assert records[0]['target_tags'][:7] == [None, 'B-ORG', 'O', None, 'B-MISC', 'O', None]
  assert records[1]['tokens'][:5] == ['[CLS]', 'Peter', 'Black', '##burn', '[SEP]']
  # Without the label names (a renderer called on its own) the ids are shown.
  batch = {key: np.asarray(records[1][key])[None] for key in ('inputs', 'targets', 'weights')}
  batch.update(segment_ids=np.asarray(records[1]['segment_ids'])[None], example_id=np.array([1]))
  text = show_lib._PieceText(tokenizers.load_tokenizer(str(tmp_path / 'vocab.txt')))
  assert show_lib._render_tagging(batch, 0, None, text)[1] == '  [CLS] Peter/1 Blackburn/2 [SEP]'


def test_span_rows_mark_the_gold_answer_in_its_window(tmp_path, monkeypatch):
  from configs import squad
  from objectives import span_qa

  monkeypatch.setattr(span_qa, 'SHOW', 'spans')
  context = ' '.join(f'w{i}' for i in range(10)) + ' the big red cat sat on the mat .'
  answer = {'text': 'the mat', 'answer_start': context.index('the mat')}
  qas = [{'id': 'q0', 'question': 'where is the cat', 'answers': [answer]}]
  data = {'data': [{'paragraphs': [{'context': context, 'qas': qas}]}]}
  (tmp_path / 'squad.json').write_text(json.dumps(data), encoding='utf-8')
  vocab = ['where', 'is', 'the', 'big', 'red', 'cat', 'sat', 'on', 'mat', '.']
  config = _tiny_task(squad.get_config('v1.1'), tmp_path, vocab + [f'w{i}' for i in range(10)])
  config.data.squad_file = config.data.eval_squad_file = str(tmp_path / 'squad.json')
  config.seq_len, config.objective.doc_stride, config.objective.max_query_length = 16, 4, 8
  # 19 document tokens, 16 - 4 - 3 = 9 per window, every 4: windows from 0, 4, 8 and 12.
  lines = show_lib.show(config, str(tmp_path / 'run'), 4, split='eval')
  assert 'gold answer [[marked]]' in lines[0]
  assert lines[1].endswith('window 0, 16 tokens, (no answer: [CLS])')
  assert lines[2] == '  where is the cat | w0 w1 w2 w3 w4 w5 w6 w7 w8'
  assert lines[7].endswith('question 0, window 3, 14 tokens, answer at tokens 10..11')
  assert lines[8] == '  where is the cat | red cat sat on [[the mat]] .'
  records = _records(show_lib.show(config, str(tmp_path / 'run'), 4, as_json=True, split='eval'))
  assert [r['start_positions'] for r in records] == [0, 0, 0, 10]
  assert records[3]['tokens'][10:12] == ['the', 'mat'] and 'targets_pieces' not in records[3]
