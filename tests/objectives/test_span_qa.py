"""Tests of objectives/span_qa.py: rows through Grain, the loss, predictions and SQuAD scoring."""

import functools

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import squad
from data.wordpiece import WordPieceTokenizer
from evaluation import task_scores
from models import heads, presets
from objectives import span_qa
from tests.objective_config import objective_config

SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
WORDS = ['who', 'what', 'where', 'the', 'cat', 'sat', 'on', 'mat', 'big', 'red', '.']
WORDS += [f'w{i}' for i in range(40)]
SEQ_LEN = 16


@pytest.fixture
def tok(tmp_path):
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(SPECIAL + WORDS) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path))


def _objective(version=1, **kw):
  d = dict(version=version, doc_stride=4, max_query_length=8, n_best_size=20, max_answer_length=30)
  return objective_config(**{**d, **kw})


def _records():
  """Three questions: a long context (several windows), a short one, an unanswerable one."""
  long = ' '.join(f'w{i}' for i in range(20)) + ' the big red cat sat on the mat .'
  short = 'the cat sat on the mat .'
  return [
    {
      'id': 'long',
      'question': 'what sat',
      'context': long,
      'answers': ['big red cat', 'red cat'],
      'answer_starts': [long.index('big'), long.index('red')],
      'is_impossible': False,
      'idx': 0,
    },
    {
      'id': 'short',
      'question': 'where',
      'context': short,
      'answers': ['on the mat'],
      'answer_starts': [short.index('on')],
      'is_impossible': False,
      'idx': 1,
    },
    {
      'id': 'none',
      'question': 'who',
      'context': short,
      'answers': [],
      'answer_starts': [],
      'is_impossible': True,
      'idx': 2,
    },
  ]


def _stream(records, epochs=1):
  items = [{'text': r, 'epoch': e, 'doc': i} for e in range(epochs) for i, r in enumerate(records)]
  return grain.MapDataset.source(items).to_iter_dataset()


def _rows(tok, records, objective=None):
  objective = objective or _objective()
  ds = span_qa.make_rows(
    objective, _stream(records), None, tok, seq_len=SEQ_LEN, seed=0, shard=0, num_shards=1
  )
  return ds, list(ds)


def _expected_windows(tok, records):
  settings = dict(max_seq_length=SEQ_LEN, doc_stride=4, max_query_length=8, train=False)
  return [squad.features(r, tok, **settings) for r in records]


def test_make_rows_gives_every_window_of_every_question_and_resumes(tok):
  records = _records()
  ds, rows = _rows(tok, records)
  expected = _expected_windows(tok, records)
  assert len(expected[0]) >= 3  # The long context needs several windows.
  ids = [(int(r['example_id']), int(r['feature_index'])) for r in rows]
  assert ids == [(i, w) for i, windows in enumerate(expected) for w in range(len(windows))]
  flat = [f for windows in expected for f in windows]
  for row, feature in zip(rows, flat, strict=True):
    assert np.array_equal(row['tokens'], feature['tokens'])
    assert row['start_positions'] == feature['start_positions']
    assert row['weight'] == 1.0 and row['epoch'] == 0 and row['tokens'].shape == (SEQ_LEN,)
  # Save after a row in the middle of the long question's windows, restore in a fresh iterator.
  it = iter(ds)
  for _ in range(2):
    next(it)
  state = it.get_state()
  rest = [(int(r['example_id']), int(r['feature_index'])) for r in it]
  fresh = iter(ds)
  fresh.set_state(state)
  assert [(int(r['example_id']), int(r['feature_index'])) for r in fresh] == rest == ids[2:]


def test_preprocess_batch_and_show_marks(tok):
  records = _records()
  _, rows = _rows(tok, records)
  batch_rows = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  batch = span_qa.make_preprocess(_objective(), tok, 0)(batch_rows)
  assert batch['inputs'].dtype == np.int32 and batch['inputs'].shape == (len(rows), SEQ_LEN)
  answer_rows = batch['start_positions'] > 0
  # 'weights' marks the gold answer's tokens (start..end), [CLS] for rows without the answer.
  lengths = batch['end_positions'] - batch['start_positions'] + 1
  assert np.array_equal(batch['weights'].sum(-1), np.where(answer_rows, lengths, 1))


def _cfg():
  return presets.get_config(
    'bert-base', vocab_size=len(SPECIAL + WORDS), num_layers=1, d_model=16, num_heads=2,
    mlp_dim=32, max_len=SEQ_LEN,
  )  # fmt: skip


def _model_batch(tok):
  records = _records()
  _, rows = _rows(tok, records)
  pad = {k: np.zeros_like(v) for k, v in rows[0].items()}  # The loader's last-batch padding.
  pad['example_id'] = np.int64(-1)
  rows = rows + [pad]
  batch_rows = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  return span_qa.make_preprocess(_objective(), tok, 0)(batch_rows)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_matches_a_hand_computation_and_padding_rows_weigh_nothing(tok):
  batch = _model_batch(tok)
  batch['weight'][1] = 0.0  # A real row whose answer was not found: no weight either.
  model = span_qa.build_model(_cfg())
  params = model.init(jax.random.key(0), batch['inputs'], batch['segment_ids'])['params']
  loss, metrics = jax.jit(functools.partial(span_qa.loss_fn, model=model))(params, batch, None)
  start, end = model.apply(
    {'params': params}, batch['inputs'], batch['segment_ids'], batch['positions'],
    batch['token_types'],
  )  # fmt: skip
  real = batch['segment_ids'] > 0
  rows = np.arange(len(real))
  xent = 0.0
  for logits, targets in ((start, batch['start_positions']), (end, batch['end_positions'])):
    logp = _log_softmax(np.where(real, np.asarray(logits, np.float64), -1e9))
    xent = xent - logp[rows, targets]
  weight = np.ones(len(real))
  weight[1] = weight[-1] = 0.0  # Row 1 unweighted, the last row is padding.
  expected = np.sum(0.5 * xent * weight) / weight.sum()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(metrics['loss'][1]) == weight.sum()
  grad_fn = jax.jit(jax.grad(lambda p, b, r: span_qa.loss_fn(p, b, r, model=model)[0]))
  grads = grad_fn(params, batch, jax.random.key(1))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads['qa_outputs']))


def test_predict_fn_shapes_and_backbone_compatible_parameters(tok):
  batch = _model_batch(tok)
  cfg = _cfg()
  model = span_qa.build_model(cfg)
  params = model.init(jax.random.key(0), batch['inputs'], batch['segment_ids'])['params']
  backbone = heads.Backbone(cfg).init(jax.random.key(0), batch['inputs'], batch['segment_ids'])
  assert jax.tree.structure(params['encoder']) == jax.tree.structure(backbone['params']['encoder'])
  out = jax.jit(functools.partial(span_qa.predict_fn, model=model))(params, batch)
  n = batch['inputs'].shape[0]
  assert out['start_logits'].shape == out['end_logits'].shape == (n, SEQ_LEN)
  assert out['start_logits'].dtype == jnp.float32
  assert out['feature_index'].shape == (n,)
  assert out['token_to_word'].shape == out['max_context'].shape == (n, SEQ_LEN)
  # Padding positions can never win.
  assert np.all(np.asarray(out['start_logits'])[batch['segment_ids'] == 0] <= -1e8)


def _planted(tok, records, spans, version=1):
  """predict_fn-like outputs whose logits put each question's answer on the given words:
  spans[i] = (first word, last word) or None for [CLS] (no answer)."""
  _, rows = _rows(tok, records, _objective(version))
  outputs = {k: [] for k in ('start_logits', 'end_logits', 'feature_index', 'example_id')}
  outputs |= {'token_to_word': [], 'max_context': []}
  for row in rows:
    start, end = np.full(SEQ_LEN, -5.0), np.full(SEQ_LEN, -5.0)
    span = spans[int(row['example_id'])]
    words = row['token_to_word']
    if span is None:
      start[0] = end[0] = 5.0
    else:
      hit_start = np.flatnonzero((words == span[0]) & row['max_context'])
      hit_end = np.flatnonzero(words == span[1])
      start[hit_start] = end[hit_end] = 5.0
      start[0] = end[0] = -5.0 if len(hit_start) and len(hit_end) else 5.0
    outputs['start_logits'].append(start)
    outputs['end_logits'].append(end)
    for key in ('feature_index', 'example_id', 'token_to_word', 'max_context'):
      outputs[key].append(row[key])
  # The evaluation concatenates in loader order; shuffle to show order does not matter.
  order = np.random.default_rng(0).permutation(len(rows))
  return {k: np.stack(v)[order] for k, v in outputs.items()}


def decode_and_score(objective_cfg, outputs, records):
  """The decoded answers scored as the evaluation scores them (evaluation/task_scores.py)."""
  return task_scores.score(span_qa.decode_predictions(objective_cfg, outputs, records))


def test_decoded_predictions_v1_exact_and_partial(tok):
  records = _records()[:2]
  # long: words 21..23 "big red cat"; short: words 3..5 "on the mat".
  result = decode_and_score(_objective(), _planted(tok, records, [(21, 23), (3, 5)]), records)
  assert result['scores'] == {'squad_em': 1.0, 'squad_f1': 1.0}
  assert result['metrics']['coverage'] == 1.0
  # long: "cat sat" against "big red cat" / "red cat": best F1 is vs "red cat": P = R = 1/2.
  # short: "the mat" against "on the mat": normalized "mat" vs "on mat" (articles dropped):
  # P = 1, R = 1/2, F1 = 2/3. EM 0 for both.
  result = decode_and_score(_objective(), _planted(tok, records, [(23, 24), (4, 5)]), records)
  assert result['scores']['squad_em'] == 0.0
  assert result['scores']['squad_f1'] == pytest.approx((0.5 + 2 / 3) / 2)


def test_decoded_predictions_v2_null_answers(tok):
  records = _records()
  objective = _objective(version=2)
  outputs = _planted(tok, records, [(21, 23), (3, 5), None], version=2)
  result = decode_and_score(objective, outputs, records)
  assert result['scores'] == {'squad2_em': 1.0, 'squad2_f1': 1.0}
  metrics = result['metrics']
  assert metrics['exact'] == metrics['f1'] == 1.0  # The default threshold 0 already works.
  assert metrics['has_ans_f1'] == metrics['no_ans_exact'] == 1.0
  # Answering the unanswerable one ("the cat") and leaving "short" unanswered: at threshold 0
  # both are wrong; EM = F1 = 1/3.
  outputs = _planted(tok, records, [(21, 23), None, (0, 1)], version=2)
  result = decode_and_score(objective, outputs, records)
  assert result['metrics']['exact'] == pytest.approx(1 / 3)
  assert result['metrics']['f1'] == pytest.approx(1 / 3)
  assert result['metrics']['no_ans_exact'] == 0.0


def test_decoded_predictions_rejects_duplicate_windows(tok):
  records = _records()[:2]
  outputs = _planted(tok, records, [(21, 23), (3, 5)])
  doubled = {k: np.concatenate([v, v[:1]]) for k, v in outputs.items()}
  with pytest.raises(ValueError, match='predicted twice'):
    decode_and_score(_objective(), doubled, records)
