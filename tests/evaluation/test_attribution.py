"""evaluation/attribution.py on a classifier trained here whose answer depends on a
planted keyword: integrated gradients satisfy completeness (to the quadrature's error,
which falls with more points), put the keyword first in every row that has it, and their
sum of gradient x input is the directional derivative measured by finite differences;
the page colours the keyword red."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from evaluation import attribution
from models import heads, presets

VOCAB, LENGTH, KEYWORD, CLS, SEP = 40, 10, 5, 1, 2
STEPS, LR, INIT = 100, 1e-3, 0.2


def _rows(rng, n: int) -> dict:
  """[CLS] 4-7 random words [SEP] padding; label 1 iff KEYWORD is among the words."""
  tokens = np.zeros((n, LENGTH), np.int32)
  segment_ids = np.zeros((n, LENGTH), np.int32)
  labels = np.arange(n) % 2
  for i in range(n):
    words = rng.choice([t for t in range(6, VOCAB)], rng.integers(4, 8))
    if labels[i]:
      words[rng.integers(len(words))] = KEYWORD
    row = [CLS, *words, SEP]
    tokens[i, : len(row)], segment_ids[i, : len(row)] = row, 1
  positions = np.where(segment_ids > 0, np.arange(LENGTH)[None], 0).astype(np.int32)
  return dict(tokens=tokens, segment_ids=segment_ids, positions=positions,
              token_types=np.zeros_like(tokens), label=labels)  # fmt: skip


@pytest.fixture(scope='module')
def keyword_classifier():
  cfg = presets.get_config(
    'bert-tiny', vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, mlp_dim=64,
    max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0, init_std=INIT,
  )  # fmt: skip
  model = heads.SequenceClassifier(cfg, 2)
  train = _rows(np.random.default_rng(0), 256)
  inputs = [jnp.asarray(train[n]) for n in attribution.INPUTS]
  params = nn.unbox(model.init(jax.random.key(0), *inputs[:2]))['params']
  tx = optax.adam(LR)

  @jax.jit
  def step(params, opt_state):
    def loss(p):
      logits = model.apply({'params': p}, *inputs)
      return optax.softmax_cross_entropy_with_integer_labels(logits, train['label']).mean()

    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for _ in range(STEPS):
    params, opt_state = step(params, opt_state)
  test = _rows(np.random.default_rng(1), 32)
  logits = model.apply({'params': params}, *(jnp.asarray(test[n]) for n in attribution.INPUTS))
  assert np.mean(np.argmax(logits, -1) == test['label']) == 1.0  # It learned the keyword.
  return model, params, test


def test_integrated_gradients_are_complete_and_find_the_keyword(keyword_classifier):
  model, params, rows = keyword_classifier
  out = attribution.attribute(model, params, rows, steps=64)
  assert out['scores'].shape == (32, LENGTH)
  gap = out['output'] - out['baseline_output']
  # Within 1% of F(x) - F(b) (Sundararajan et al. ask for 5%): measured 4e-4 at most.
  relative = out['completeness_error'] / np.maximum(np.abs(gap), 0.1)
  assert np.all(relative <= 1e-2), relative
  np.testing.assert_allclose(out['scores'].sum(-1), gap, atol=1e-2)
  # [CLS], [SEP] and padding get nothing.
  attributed = attribution.default_attributed(rows['segment_ids'])
  assert np.all(out['scores'][~attributed] == 0.0)
  # Every row with the keyword (explained class 1): the keyword ranks first.
  positive = rows['label'] == 1
  assert np.all(out['target'][positive] == 1)
  top = np.argmax(np.where(attributed, out['scores'], -np.inf), -1)
  keyword_at = np.argmax(rows['tokens'] == KEYWORD, -1)
  np.testing.assert_array_equal(top[positive], keyword_at[positive])
  # A coarser rule is less complete: the error is the quadrature's.
  coarse = attribution.attribute(model, params, rows, steps=8)
  assert coarse['completeness_error'].mean() > 10 * out['completeness_error'].mean()


def test_gradient_x_input_is_the_directional_derivative(keyword_classifier):
  model, params, rows = keyword_classifier
  out = attribution.attribute(model, params, rows, method='gradient_x_input')
  assert np.all(np.isnan(out['completeness_error']))
  # sum_i x_i . dF/dx_i = d/de F((1 + e) x) at e = 0, x moved on the attributed tokens
  # only: central differences (float32, a step of 1e-2).
  attributed = attribution.default_attributed(rows['segment_ids'])
  inputs = tuple(jnp.asarray(rows[n]) for n in attribution.INPUTS)
  site = attribution._site(model, params, inputs)
  _, x = attribution._forward(params, inputs, model=model, site=site)
  moved = jnp.asarray(np.asarray(x) * attributed[..., None])
  eps = 1e-2
  target = jnp.asarray(out['target'])
  up, _ = attribution._output_and_grad(params, inputs, eps * moved, target, model=model, site=site)
  down, _ = attribution._output_and_grad(params, inputs, -eps * moved, target, model=model,
                                         site=site)  # fmt: skip
  np.testing.assert_allclose(out['scores'].sum(-1), (up - down) / (2 * eps), atol=2e-3)
  np.testing.assert_allclose(out['output'], (up + down) / 2, atol=1e-3)  # F(x), to O(eps^2).


def test_the_page_colours_the_keyword_red(keyword_classifier):
  model, params, rows = keyword_classifier
  out = attribution.attribute(model, params, {k: v[1:2] for k, v in rows.items()})
  length = int(rows['segment_ids'][1].sum())
  pieces = ['[CLS]', *(f'w{t}' for t in rows['tokens'][1, 1 : length - 1]), '[SEP]']
  item = attribution.Attribution(
    pieces=[p if p != f'w{KEYWORD}' else '<kw>' for p in pieces],
    scores=out['scores'][0, :length].tolist(),
    method='integrated_gradients',
    target=int(out['target'][0]),
    prediction=int(np.argmax(out['logits'][0])),
    label=1,
    output=float(out['output'][0]),
    baseline_output=float(out['baseline_output'][0]),
    completeness_error=float(out['completeness_error'][0]),
  )
  assert item.top(1)[0][0] == '<kw>'
  page = attribution.render_html([item], 'keyword <test>')
  assert '&lt;kw&gt;' in page and '<kw>' not in page  # Pieces and title are escaped.
  assert 'background:rgba(220,38,38,1.000)" title="+' in page  # The keyword: full red.
  assert 'completeness error' in page
