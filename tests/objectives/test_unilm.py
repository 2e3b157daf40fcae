"""Tests of objectives/unilm.py: kinds, their attention masks, cloze masking and loss."""

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import attention, presets
from objectives import unilm
from tests.objective_config import objective_config

TOKENIZER = SimpleNamespace(
  vocab_size=64,
  pad_id=0,
  unk_id=1,
  cls_id=2,
  sep_id=3,
  mask_id=4,
  special_ids=np.array([0, 1, 2, 3, 4], np.int32),
)
NUM_ORDINARY = TOKENIZER.vocab_size - len(TOKENIZER.special_ids)
PAPER_RATES = np.array([1 / 3, 1 / 6, 1 / 6, 1 / 3])


def _objective(rates=PAPER_RATES):
  kinds = {f'{k}_rate': float(r) for k, r in zip(unilm.KINDS, rates, strict=True)}
  return objective_config(mask_rate=0.15, mask_token_rate=0.8, random_token_rate=0.1, **kinds)


def _batch(batch_size=64, length=64, seed=0, epoch=0):
  """Packed rows as data/packing.py makes them: [CLS] text [SEP] segments of 3-40
  tokens, some [UNK] in the text, and a padded tail in most rows."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, TOKENIZER.vocab_size, (batch_size, length))
  tokens = np.where(rng.random(tokens.shape) < 0.02, TOKENIZER.unk_id, tokens)
  segment_ids = np.zeros((batch_size, length), np.int32)
  positions = np.zeros((batch_size, length), np.int32)
  for row in range(batch_size):
    fill, segment = 0, 0
    while length - fill >= 8:
      size = min(int(rng.integers(3, 41)), length - fill)
      segment += 1
      segment_ids[row, fill : fill + size] = segment
      positions[row, fill : fill + size] = np.arange(size)
      tokens[row, fill], tokens[row, fill + size - 1] = TOKENIZER.cls_id, TOKENIZER.sep_id
      fill += size
    tokens[row, fill:] = TOKENIZER.pad_id
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids,
    'positions': positions,
    'epoch': np.full(batch_size, epoch, np.int64),
    'example_id': np.arange(batch_size, dtype=np.int64),
  }


def _within(count, n, p, sigmas=5.0):
  """|count / n - p| within `sigmas` binomial standard deviations."""
  bound = sigmas * math.sqrt(p * (1 - p) / n)
  assert abs(count / n - p) <= bound, (count / n, p, bound)


def _expected_mask(kind: int, target: np.ndarray) -> np.ndarray:
  """One segment's mask [n, n] by the paper's definition of its kind."""
  n = len(target)
  i, j = np.arange(n)[:, None], np.arange(n)[None, :]
  if kind == unilm.BIDIRECTIONAL_LM:
    return np.ones((n, n), bool)
  if kind == unilm.LEFT_TO_RIGHT_LM:
    return j <= i
  if kind == unilm.RIGHT_TO_LEFT_LM:
    return j >= i
  source = ~target
  # Sources see the whole source only; targets the source and the target up to themselves.
  return source[None, :] | (target[:, None] & target[None, :] & (j <= i))


def test_attention_masks_of_each_kind():
  batch = _batch()
  out = unilm.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  mask = np.asarray(
    attention.attention_kinds_mask(
      jnp.asarray(out['segment_ids']), jnp.asarray(out['attention_kinds'])
    )
  )[:, 0]  # [batch, length, length]
  seen = np.zeros(len(unilm.KINDS), int)
  for row in range(mask.shape[0]):
    expected = np.zeros_like(mask[row])  # Nothing across segments, nothing with padding.
    for segment in range(1, out['segment_ids'][row].max() + 1):
      cols = np.flatnonzero(out['segment_ids'][row] == segment)
      kinds = out['lm_kinds'][row, cols]
      assert (kinds == kinds[0]).all()  # One kind per segment.
      target = out['token_types'][row, cols] == 1
      if kinds[0] == unilm.SEQ2SEQ_LM:
        # [CLS] and at least one text token (when there are two) in the source; the
        # target is the rest, through [SEP].
        body = len(cols) - 2
        cut = np.argmax(target)
        assert target[cut:].all() and not target[:cut].any() and target[-1]
        assert 1 + min(body, 1) <= cut <= len(cols) - 1
        assert cut <= body or body < 2
      else:
        assert not target.any()
      expected[np.ix_(cols, cols)] = _expected_mask(kinds[0], target)
      seen[kinds[0]] += 1
    np.testing.assert_array_equal(mask[row], expected, err_msg=f'row {row}')
  assert (seen > 20).all(), seen
  assert (out['lm_kinds'][out['segment_ids'] == 0] == -1).all()


def _segment_kinds(out) -> np.ndarray:
  """The kind of every segment, read at its [CLS]."""
  return out['lm_kinds'][(out['positions'] == 0) & (out['segment_ids'] > 0)]


@pytest.mark.parametrize('rates', [PAPER_RATES, np.array([0.5, 0.0, 0.2, 0.3])])
def test_kind_proportions(rates):
  batch = _batch(batch_size=4096, length=128, seed=1)
  kinds = _segment_kinds(unilm.make_preprocess(_objective(rates), TOKENIZER, seed=5)(batch))
  n = len(kinds)
  assert n > 20_000
  counts = np.bincount(kinds, minlength=len(unilm.KINDS))
  for count, rate in zip(counts, rates, strict=True):
    if rate == 0:
      assert count == 0
    else:
      _within(count, n, rate)


def test_seq2seq_split_point_is_uniform():
  """A seq2seq segment of L text tokens keeps 1 + floor(u (L - 1)) of them in the source."""
  batch = _batch(batch_size=4096, length=128, seed=2)
  out = unilm.make_preprocess(_objective([0, 0, 0, 1]), TOKENIZER, seed=3)(batch)
  source = (out['segment_ids'] > 0) & (out['token_types'] == 0)
  starts = (out['positions'] == 0) & (out['segment_ids'] > 0)
  rows, cols = np.nonzero(starts)
  flat = out['segment_ids'] + out['segment_ids'].max() * np.arange(len(out['segment_ids']))[:, None]
  size = np.bincount(flat.ravel(), minlength=flat.max() + 1)
  kept = np.bincount(flat.ravel(), weights=source.ravel(), minlength=flat.max() + 1)
  body = size[flat[rows, cols]] - 2
  text_in_source = kept[flat[rows, cols]] - 1  # Without [CLS].
  chosen = body == 21  # 1..20 text tokens in the source, each with probability 1/20.
  counts = np.bincount(text_in_source[chosen].astype(int), minlength=21)
  assert counts[0] == 0 and counts.sum() == chosen.sum() > 400
  expected = chosen.sum() / 20
  chi2 = ((counts[1:] - expected) ** 2 / expected).sum()
  assert chi2 < 50, (chi2, counts)  # 19 degrees of freedom: p < 1e-4 beyond 50.


def test_cloze_masking_in_every_kind():
  batch = _batch(batch_size=1024, length=256, seed=4)
  out = unilm.make_preprocess(_objective(), TOKENIZER, seed=0)(batch)
  tokens, inputs = batch['tokens'], out['inputs']
  np.testing.assert_array_equal(out['targets'], tokens)
  candidates = (batch['segment_ids'] > 0) & ~np.isin(tokens, TOKENIZER.special_ids)
  selected = out['weights'] > 0
  assert not (selected & ~candidates).any()  # No special token or padding is predicted.
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])
  seq2seq = out['lm_kinds'] == unilm.SEQ2SEQ_LM
  target = out['token_types'] == 1
  groups = {name: out['lm_kinds'] == i for i, name in enumerate(unilm.KINDS)}
  groups.update(source=seq2seq & ~target, target=seq2seq & target)
  for name, group in groups.items():
    n = int((candidates & group).sum())
    assert n > 15_000, name
    k = int((selected & group).sum())
    _within(k, n, 0.15)
    masked = (selected & group & (inputs == TOKENIZER.mask_id)).sum()
    kept = (selected & group & (inputs == tokens)).sum()
    _within(masked, k, 0.8)
    _within(kept, k, 0.1 + 0.1 / NUM_ORDINARY)  # A random token may be the original.


def test_determinism():
  batch = _batch(batch_size=16, length=128)
  preprocess = unilm.make_preprocess(_objective(), TOKENIZER, seed=0)
  out = preprocess(batch)
  for key, value in preprocess(batch).items():
    np.testing.assert_array_equal(value, out[key], err_msg=key)
  for i in (0, 9):  # A row is the same alone and in any batch.
    alone = preprocess({k: v[i : i + 1] for k, v in batch.items()})
    for key, value in alone.items():
      np.testing.assert_array_equal(value[0], out[key][i], err_msg=key)
  reordered = preprocess({k: v[::-1] for k, v in batch.items()})
  for key, value in reordered.items():
    np.testing.assert_array_equal(value[::-1], out[key], err_msg=key)
  changed = [
    preprocess({**batch, 'epoch': batch['epoch'] + 1}),
    preprocess({**batch, 'example_id': batch['example_id'] + 100}),
    unilm.make_preprocess(_objective(), TOKENIZER, seed=1)(batch),
  ]
  for other in changed:
    assert (other['lm_kinds'] != out['lm_kinds']).any()
    assert (other['token_types'] != out['token_types']).any()
    assert (other['weights'] != out['weights']).any()


@pytest.mark.parametrize('rates', [(0.5, 0.5, 0.5, 0.0), (1.2, -0.2, 0.0, 0.0), (0.3, 0, 0, 0)])
def test_bad_rates(rates):
  with pytest.raises(ValueError, match='the rates must be >= 0 and sum to 1'):
    unilm.make_preprocess(_objective(rates), TOKENIZER, seed=0)


class _LogitsModel:
  """Stands in for the model: its logits are its params; checks what it is given."""

  def apply(self, variables, inputs, segment_ids, positions, token_types, **kwargs):
    assert inputs.shape == segment_ids.shape == positions.shape == token_types.shape
    assert kwargs['attention_kinds'].shape == inputs.shape
    return variables['params']['logits']


def test_loss_reference_under_jit():
  logits = np.array(
    [
      [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0], [1.0, 1.5, 0.5, 0.25]],
      [[-1.0, -2.0, 0.0, 4.0], [0.3, 0.3, 0.9, 0.1], [5.0, 1.0, 2.0, 3.0]],
    ],
    np.float32,
  )  # [batch=2, length=3, vocab=4]
  ints = np.zeros((2, 3), np.int32)
  batch = {
    'inputs': ints,
    'segment_ids': ints + 1,
    'positions': ints,
    'token_types': ints,
    'attention_kinds': ints,
    'targets': np.array([[0, 2, 1], [3, 0, 2]], np.int32),
    'weights': np.array([[1, 0, 1], [1, 1, 0]], np.float32),
    'lm_kinds': np.array([[0, 0, 3], [1, 1, -1]], np.int32),
  }

  def loss(params):
    return unilm.loss_fn(params, batch, None, model=_LogitsModel())

  (value, m), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))({'logits': logits})
  # -log softmax of each weighted target, by hand (natural logs).
  x00 = math.log(math.exp(2) + math.exp(0.5) + math.exp(-1) + 1) - 2.0
  x02 = math.log(math.exp(1) + math.exp(1.5) + math.exp(0.5) + math.exp(0.25)) - 1.5
  x10 = math.log(math.exp(-1) + math.exp(-2) + 1 + math.exp(4)) - 4.0
  x11 = math.log(2 * math.exp(0.3) + math.exp(0.9) + math.exp(0.1)) - 0.3
  np.testing.assert_allclose(float(value), (x00 + x02 + x10 + x11) / 4, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m['loss']), (x00 + x02 + x10 + x11, 4), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m['loss_bidirectional']), (x00, 1), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m['loss_left_to_right']), (x10 + x11, 2), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(m['loss_right_to_left']), (0, 0))
  np.testing.assert_allclose(np.asarray(m['loss_seq2seq']), (x02, 1), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(m['accuracy']), (3, 4))  # All but (1, 1) hit.
  # d loss / d logits = (softmax - one-hot) * weight / total weight.
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  onehot = np.eye(4)[batch['targets']]
  expected = (probs - onehot) * batch['weights'][..., None] / 4
  np.testing.assert_allclose(np.asarray(grads['logits']), expected, atol=1e-6)


def test_loss_through_a_tiny_model():
  cfg = presets.get_config('bert-tiny', vocab_size=TOKENIZER.vocab_size, max_len=64)
  model = unilm.build_model(cfg)
  tokens = jnp.ones((1, 16), jnp.int32)  # The init shape of tests/models: cached compiles.
  params = model.init(jax.random.key(0), tokens, tokens)['params']
  out = unilm.make_preprocess(_objective(), TOKENIZER, seed=1)(_batch(batch_size=4, length=32))
  assert len(np.unique(out['lm_kinds'])) == 5  # Every kind and padding.
  loss_and_grad = jax.jit(
    jax.value_and_grad(lambda p, b: unilm.loss_fn(p, b, None, model=model), has_aux=True)
  )
  (loss, m), grads = loss_and_grad(params, out)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  assert np.isfinite(float(loss)) and float(m['loss'][1]) == out['weights'].sum()
  per_kind = [m[f'loss_{k}'] for k in unilm.KINDS]
  np.testing.assert_allclose(sum(float(s) for s, _ in per_kind), float(m['loss'][0]), rtol=1e-5)
  assert sum(float(w) for _, w in per_kind) == float(m['loss'][1])
  # The kinds and the token types reach the encoder.
  for key, value in (('attention_kinds', 0), ('token_types', 0)):
    other = loss_and_grad(params, {**out, key: np.full_like(out[key], value)})[0][0]
    assert abs(float(other) - float(loss)) > 1e-4, key
