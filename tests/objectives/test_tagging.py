"""NER tagging (objectives/tagging.py): rows, loss, predictions, conlleval scoring."""

import os
import random

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import conll as conll_config
from data import conll
from data.wordpiece import WordPieceTokenizer
from evaluation import task_scores
from models import heads, presets
from objectives import api, tagging
from objectives.shared import task_inputs
from tests.objective_config import objective_config
from tests.training import finetune_runs

# A cased WordPiece vocabulary, ids 0-4 the specials, then EU=5, re=6, ##jects=7, German=8,
# .=9, Peter=10, Black=11, ##burn=12, in=13, Bonn=14.
_VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'EU', 're', '##jects', 'German', '.']
_VOCAB += ['Peter', 'Black', '##burn', 'in', 'Bonn']
LABELS = tagging.CONLL_LABELS
# The objective with CoNLL-2003's labels, as configs/conll.py configures it.
CONLL = tagging.Tagging(LABELS)
ID = {tag: i for i, tag in enumerate(LABELS)}

_RECORDS = [
  {'words': ['EU', 'rejects', 'German', '.'], 'tags': ['B-ORG', 'O', 'B-MISC', 'O'], 'idx': 0},
  {'words': ['Peter', 'Blackburn'], 'tags': ['B-PER', 'I-PER'], 'idx': 1},
  {'words': ['in', 'Bonn'], 'tags': ['O', 'B-LOC'], 'idx': 2},
  {'words': ['EU', 'rejects', 'in', 'Bonn'], 'tags': ['B-ORG', 'O', 'O', 'B-LOC'], 'idx': 3},
]


@pytest.fixture
def tokenizer(tmp_path):
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(_VOCAB) + '\n', encoding='utf-8')
  return WordPieceTokenizer(str(path), lowercase=False)


def _rows(records, tokenizer, seq_len, objective=CONLL):
  """The rows make_rows builds from a one-pass stream over `records`, in order."""
  items = [{'text': r, 'epoch': 0, 'doc': i} for i, r in enumerate(records)]
  stream = grain.MapDataset.source(items).to_iter_dataset()
  rows = objective.make_rows(
    None, stream, items, tokenizer, seq_len=seq_len, seed=0, shard=0, num_shards=1
  )
  rows = list(rows)
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def test_rows_label_first_subtokens_only(tokenizer):
  rows = _rows(_RECORDS[:2], tokenizer, seq_len=10)
  # [CLS] EU re ##jects German . [SEP] pad...; [CLS] Peter Black ##burn [SEP] pad...
  np.testing.assert_array_equal(
    rows['tokens'], [[2, 5, 6, 7, 8, 9, 3, 0, 0, 0], [2, 10, 11, 12, 3, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(
    rows['labels'],
    [
      [0, ID['B-ORG'], ID['O'], 0, ID['B-MISC'], ID['O'], 0, 0, 0, 0],
      [0, ID['B-PER'], ID['I-PER'], 0, 0, 0, 0, 0, 0, 0],
    ],
  )
  np.testing.assert_array_equal(
    rows['label_weights'], [[0, 1, 1, 0, 1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(
    rows['word_numbers'], [[0, 1, 2, 0, 3, 4, 0, 0, 0, 0], [0, 1, 2, 0, 0, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(
    rows['segment_ids'], [[1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]]
  )
  np.testing.assert_array_equal(rows['positions'][0], [0, 1, 2, 3, 4, 5, 6, 0, 0, 0])
  np.testing.assert_array_equal(rows['token_types'], np.zeros((2, 10)))
  np.testing.assert_array_equal(rows['example_id'], [0, 1])
  np.testing.assert_array_equal(rows['epoch'], [0, 0])
  assert rows['label_weights'].dtype == np.float32 and rows['tokens'].dtype == np.int32


def test_rows_truncate_long_sentences_inside_the_framing(tokenizer):
  # 5 sub-tokens, room for 4 between [CLS] and [SEP]: '.' is cut off, [SEP] still closes.
  rows = _rows(_RECORDS[:1], tokenizer, seq_len=6)
  np.testing.assert_array_equal(rows['tokens'], [[2, 5, 6, 7, 8, 3]])
  np.testing.assert_array_equal(rows['word_numbers'], [[0, 1, 2, 0, 3, 0]])
  np.testing.assert_array_equal(rows['label_weights'], [[0, 1, 1, 0, 1, 0]])
  np.testing.assert_array_equal(rows['segment_ids'], [[1] * 6])
  # A cut inside a word keeps its (first) label: room 2 keeps EU and 're' of 'rejects'.
  rows = _rows(_RECORDS[:1], tokenizer, seq_len=4)
  np.testing.assert_array_equal(rows['tokens'], [[2, 5, 6, 3]])
  np.testing.assert_array_equal(rows['labels'], [[0, ID['B-ORG'], ID['O'], 0]])
  with pytest.raises(ValueError, match='no room'):
    _rows(_RECORDS[:1], tokenizer, seq_len=2)


def test_rows_reject_unknown_tags_and_misaligned_records(tokenizer):
  bad = {'words': ['EU'], 'tags': ['B-XYZ'], 'idx': 0}
  with pytest.raises(ValueError, match='B-XYZ'):
    _rows([bad], tokenizer, seq_len=8)
  with pytest.raises(ValueError, match='1 words but 2 tags'):
    _rows([{'words': ['EU'], 'tags': ['O', 'O'], 'idx': 0}], tokenizer, seq_len=8)


def test_configure_labels_and_model():
  cfg = conll_config.get_config()
  objective = api.load(cfg.objective.module, cfg.objective)
  assert objective.labels == LABELS  # The config's order is the classifier's.
  model_cfg = presets.get_config('bert-tiny', vocab_size=16)
  model = objective.build_model(model_cfg)
  assert isinstance(model, heads.TokenClassifier) and model.num_labels == 9
  assert tagging.configure(objective_config(labels='O, B-X ,I-X')).labels == ('O', 'B-X', 'I-X')
  assert tagging.configure(objective_config()).labels == LABELS  # '': CoNLL-2003's.
  with pytest.raises(ValueError, match='twice'):
    tagging.parse_labels(objective_config(labels='O,B-X,B-X'))
  with pytest.raises(ValueError, match="lacks 'O'"):
    tagging.parse_labels(objective_config(labels='B-X,I-X'))
  # The shared data's tags are all in the config's list (IOB2; label_list sorts them).
  assert set(conll.label_list([(['w'], list(LABELS))])) == set(LABELS)


def _model_and_batch(tokenizer, pad_rows=1):
  """A tiny TokenClassifier and a preprocessed batch of the 4 records plus padding rows."""
  rows = _rows(_RECORDS, tokenizer, seq_len=10)
  padding = {k: np.zeros_like(v[:pad_rows]) for k, v in rows.items()}  # As the loader pads.
  padding['example_id'] = np.full(pad_rows, -1, np.int64)
  rows = {k: np.concatenate([v, padding[k]]) for k, v in rows.items()}
  batch = CONLL.make_preprocess(None, tokenizer, 0)(rows)
  cfg = presets.get_config(
    'bert-tiny', vocab_size=len(_VOCAB), num_layers=1, d_model=16, num_heads=2, mlp_dim=32
  )
  model = CONLL.build_model(cfg)
  args = [jnp.asarray(batch[k]) for k in task_inputs.MODEL_INPUTS]
  params = jax.jit(model.init)(jax.random.key(0), *args)['params']  # Jitted: faster on CPU.
  return model, params, batch


def test_loss_matches_a_hand_computed_cross_entropy_under_jit(tokenizer):
  model, params, batch = _model_and_batch(tokenizer)
  # The padding row weighs nothing, so the hand-computed mean below leaves it out.
  assert batch['weights'][-1].sum() == 0 and batch['example_id'][-1] == -1
  loss_fn = jax.jit(lambda p, b: CONLL.loss_fn(p, b, None, model=model))
  loss, values = loss_fn(params, batch)
  logits = np.asarray(
    jax.jit(model.apply)({'params': params}, *(batch[k] for k in task_inputs.MODEL_INPUTS)),
    np.float64,
  )
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  # The labelled positions by hand: 4 + 2 + 2 + 4 first sub-tokens.
  picked = np.take_along_axis(log_probs, batch['targets'][..., None], -1)[..., 0]
  weights = batch['weights']
  assert weights.sum() == 12
  expected = -(picked * weights).sum() / weights.sum()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(values['loss'][1]), 12.0)
  correct = ((logits.argmax(-1) == batch['targets']) * weights).sum()
  np.testing.assert_allclose(float(values['accuracy'][0]), correct)
  grads = jax.jit(jax.grad(lambda p: CONLL.loss_fn(p, batch, jax.random.key(1), model=model)[0]))(
    params
  )
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_predict_fn_gives_argmax_tags_per_token(tokenizer):
  model, params, batch = _model_and_batch(tokenizer, pad_rows=2)
  out = jax.jit(lambda p, b: CONLL.predict_fn(p, b, model=model))(params, batch)
  assert out['tags'].shape == (6, 10) and out['tags'].dtype == jnp.int32
  logits = jax.jit(model.apply)({'params': params}, *(batch[k] for k in task_inputs.MODEL_INPUTS))
  np.testing.assert_array_equal(out['tags'], np.argmax(logits, -1))
  np.testing.assert_array_equal(out['word_numbers'], batch['word_numbers'])
  assert int(out['tags'].max()) < len(LABELS)


def test_decoded_tags_score_as_conlleval(tokenizer):
  # seq_len 6: room for 4 sub-tokens, so record 0 loses '.' (gold O) and record 3 loses
  # 'Bonn' (gold B-LOC): both are then predicted 'O'.
  rows = _rows(_RECORDS, tokenizer, seq_len=6)
  np.testing.assert_array_equal(rows['word_numbers'][3], [0, 1, 2, 0, 3, 0])
  planted = {  # Predicted word tags of the words each row labels.
    0: ['B-ORG', 'O', 'B-MISC'],  # ORG and MISC right; '.' cut (O, right).
    1: ['B-PER', 'B-PER'],  # Two PER where gold has one PER over both: 0 right, 2 predicted.
    2: ['O', 'O'],  # The LOC at the sentence end missed.
    3: ['B-ORG', 'O', 'O'],  # ORG right; the cut-off LOC missed.
  }
  # Everything not a first sub-token gets a wrong tag, which must be ignored.
  tags = np.full(rows['tokens'].shape, ID['B-LOC'], np.int32)
  for row, words in planted.items():
    first = np.flatnonzero(rows['word_numbers'][row])
    tags[row, first] = [ID[t] for t in words]
  order = np.array([2, 0, 3, 1])  # Rows arrive in loader order, not record order.
  outputs = {
    'tags': tags[order],
    'word_numbers': rows['word_numbers'][order],
    'example_id': rows['example_id'][order],
  }
  result = task_scores.score(CONLL.decode_predictions(None, outputs, _RECORDS))
  # Gold entities 2 + 1 + 1 + 2 = 6; predicted 2 + 2 + 0 + 1 = 5; right 2 + 0 + 0 + 1 = 3.
  precision, recall = 3 / 5, 3 / 6
  f1 = 2 * precision * recall / (precision + recall)
  metrics = result['metrics']
  assert metrics['precision'] == pytest.approx(precision)
  assert metrics['recall'] == pytest.approx(recall)
  assert metrics['f1'] == pytest.approx(f1)
  assert result['scores'] == {'conll_f1': pytest.approx(f1)}
  # Words right: 4 + 1 (Peter) + 1 (in) + 3 (Bonn cut off, wrong) = 9 of 12.
  assert metrics['token_accuracy'] == pytest.approx(9 / 12)
  # Perfect predictions of everything that fits: only the cut-off LOC is missed.
  perfect = np.where(rows['word_numbers'] > 0, rows['labels'], 0)
  outputs = {**outputs, 'tags': perfect[order]}
  result = task_scores.score(CONLL.decode_predictions(None, outputs, _RECORDS))['metrics']
  assert result['precision'] == 1.0 and result['recall'] == pytest.approx(5 / 6)
  assert result['token_accuracy'] == pytest.approx(11 / 12)
  with pytest.raises(ValueError, match='two rows'):
    twice = {k: np.concatenate([v, v[:1]]) for k, v in outputs.items()}
    CONLL.decode_predictions(None, twice, _RECORDS)


def test_conll_file_to_rows(tmp_path, tokenizer):
  path = tmp_path / 'train.txt'
  path.write_text(
    '-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n'
    'Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\nin IN B-PP O\nBonn NNP B-NP B-LOC\n',
    encoding='utf-8',
  )
  records = [
    {'words': words, 'tags': tags, 'idx': i}
    for i, (words, tags) in enumerate(conll.read_conll(str(path)))
  ]
  rows = _rows(records, tokenizer, seq_len=8)
  np.testing.assert_array_equal(rows['example_id'], [0, 1, 2])
  np.testing.assert_array_equal(
    rows['tokens'],
    [[2, 5, 6, 7, 3, 0, 0, 0], [2, 10, 11, 12, 3, 0, 0, 0], [2, 13, 14, 3, 0, 0, 0, 0]],
  )
  np.testing.assert_array_equal(
    rows['labels'],
    [
      [0, ID['B-ORG'], ID['O'], 0, 0, 0, 0, 0],
      [0, ID['B-PER'], ID['I-PER'], 0, 0, 0, 0, 0],
      [0, ID['O'], ID['B-LOC'], 0, 0, 0, 0, 0],
    ],
  )
  np.testing.assert_array_equal(rows['label_weights'].sum(1), [2, 2, 2])


_ENTITIES = {
  'PER': ('Ada Lovelace', 'Alan Turing', 'Guido van Rossum', 'Grace Hopper'),
  'ORG': ('Python Software Foundation', 'Google', 'Apache'),
  'LOC': ('Paris', 'London', 'New York', 'Berlin'),
  'MISC': ('English', 'German', 'Unix'),
}
_FILLER = ('the', 'of', 'and', 'is', 'in', 'to', 'a', 'module', 'function', 'said', 'visited')


def write_conll(conll_dir, n_train: int, n_valid: int, seed: int = 0) -> None:
  """CoNLL-2003-format train.txt / valid.txt: filler words around one or two entities."""
  rng = random.Random(seed)
  os.makedirs(conll_dir, exist_ok=True)
  for split, n in (('train', n_train), ('valid', n_valid)):
    lines = ['-DOCSTART- -X- -X- O', '']
    for _ in range(n):
      words = [(w, 'O') for w in rng.choices(_FILLER, k=rng.randint(2, 5))]
      for _ in range(rng.randint(1, 2)):
        kind = rng.choice(sorted(_ENTITIES))
        names = rng.choice(_ENTITIES[kind]).split()
        tagged = [(w, ('B-' if i == 0 else 'I-') + kind) for i, w in enumerate(names)]
        at = rng.randint(0, len(words))
        words[at:at] = tagged
      lines += [f'{w} NN O {t}' for w, t in words] + ['']
    with open(os.path.join(conll_dir, f'{split}.txt'), 'w') as f:
      f.write('\n'.join(lines))


@pytest.mark.slow
def test_short_fine_tune_improves_entity_f1(spm_path, tmp_path):
  """40 steps (batch 8) of a 2 x 64 TokenClassifier on a fixture CoNLL dir through the
  trainer: dev entity F1 and token accuracy climb from the fresh model's."""
  write_conll(tmp_path / 'conll', 320, 48)
  config = conll_config.get_config()
  config.data.conll_dir = str(tmp_path / 'conll')
  config.data.tokenizer_path = spm_path
  config.model.preset = 'bert-tiny'
  config.model.num_layers, config.model.d_model = 2, 64
  config.model.num_heads, config.model.mlp_dim = 2, 128
  config.seq_len, config.batch_size = 32, 8
  config.peak_flops_per_device = 1e9
  config.total_steps, config.eval_every_steps, config.checkpoint_every_steps = 40, 20, 20
  config.log_every_steps = 10
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 5e-3, 4
  config.optimizer.warmup_ratio = 0.0
  config.model.dropout_rate = 0.0  # 40 steps need no regularization.
  workdir = str(tmp_path / 'run')
  before, result = finetune_runs.train_and_evaluate(config, workdir)
  assert result['examples'] == {'valid': 48}
  assert result['benchmark'] == 'conll' and result['task'] == 'conll2003'
  after, start = result['metrics'], before['metrics']
  # Measured: F1 0.03 -> 0.37, token accuracy 0.32 -> 0.80. Predicting all 'O' would
  # score F1 0, so the F1 bound needs tagged entities.
  assert after['token_accuracy'] > start['token_accuracy'] + 0.3, (before, result)
  assert result['scores']['conll_f1'] > before['scores']['conll_f1'] + 0.2, (before, result)
