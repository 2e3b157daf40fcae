"""Tests of objectives/electra.py: MLM's masking, sampling, labels, the combined loss."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from models import presets
from objectives import api, electra, mlm
from tests.objective_config import objective_config
from tests.objectives.test_mlm import TOKENIZER, _batch, _check_rates

VOCAB = TOKENIZER.vocab_size
# ELECTRA's code: 15% selected, 85% of them [MASK], the rest kept, no random tokens.
RATES = dict(mask_rate=0.15, mask_token_rate=0.85, random_token_rate=0.0)


def _objective_cfg(**kw):
  return objective_config(**{**RATES, **kw})


def _rows(batch_size=4, length=24, seed=3):
  """Two packed segments per row, each [CLS] ... [SEP], then 4 padding positions."""
  rng = np.random.default_rng(seed)
  ordinary = np.setdiff1d(np.arange(VOCAB), TOKENIZER.special_ids)
  tokens = rng.choice(ordinary, size=(batch_size, length))
  tokens[:, [0, 11]] = TOKENIZER.cls_id
  tokens[:, [10, 19]] = TOKENIZER.sep_id
  segment_ids = np.repeat([[1] * 11 + [2] * 9 + [0] * 4], batch_size, axis=0)
  tokens[:, 20:] = TOKENIZER.pad_id
  positions = np.where(segment_ids == 2, np.arange(length) - 11, np.arange(length))
  return {
    'tokens': tokens.astype(np.int32),
    'segment_ids': segment_ids.astype(np.int32),
    'positions': np.where(segment_ids > 0, positions, 0).astype(np.int32),
    'epoch': np.zeros(batch_size, np.int64),
    'example_id': np.arange(batch_size, dtype=np.int64),
  }


@pytest.fixture(scope='module')
def setup():
  """A tiny ELECTRA (no dropout), its params, a masked batch and jitted loss pieces."""
  cfg = presets.get_config(
    'electra-small',
    vocab_size=VOCAB,
    num_layers=1,
    d_model=32,
    num_heads=2,
    mlp_dim=64,
    embed_dim=16,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
  )
  objective = electra.Electra(generator_fraction=0.5, rtd_weight=50.0)
  model = objective.build_model(cfg)
  ones = jnp.ones((1, 24), jnp.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), ones, ones, ones)['params'])
  rows = _rows()
  # Every position through the generator's vocabulary projection: the reference layout
  # (test_gathered_generator_is_the_all_positions_one checks the gathered one against it).
  every = _objective_cfg(mask_rate=0.4, max_predictions_per_seq=-1)
  batch = mlm.make_preprocess(every, TOKENIZER, seed=0)(rows)
  return dict(
    model=model,
    params=params,
    batch=batch,
    objective=objective,
    forward=jax.jit(functools.partial(electra.forward, model=model)),
    loss=jax.jit(functools.partial(objective.loss_fn, model=model)),
  )


def test_masking_is_mlms():
  batch = _batch()
  preprocess = electra.Electra.make_preprocess(_objective_cfg(), TOKENIZER, seed=0)
  out = preprocess(batch)
  _check_rates(out, batch, **RATES)
  reference = mlm.make_preprocess(_objective_cfg(), TOKENIZER, seed=0)(batch)
  for key, value in reference.items():
    np.testing.assert_array_equal(out[key], value)


def test_masking_determinism():
  batch = _batch(batch_size=8, length=128)
  preprocess = electra.Electra.make_preprocess(_objective_cfg(), TOKENIZER, seed=0)
  out = preprocess(batch)
  alone = preprocess({k: v[3:4] for k, v in batch.items()})
  for key, value in alone.items():
    np.testing.assert_array_equal(value[0], out[key][3])
  other_epoch = preprocess({**batch, 'epoch': batch['epoch'] + 1})
  assert (other_epoch['weights'] != out['weights']).any()


def test_sample_tokens_follows_the_softmax():
  logits = np.array([2.0, 1.0, 0.0, -1.0, -3.0, 0.5])
  softmax = lambda x: np.exp(x) / np.exp(x).sum()  # noqa: E731  (float64)
  probs = softmax(logits)
  n = 60_000
  rows = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, 6))
  draws = jax.jit(electra.sample_tokens)(rows, jax.random.key(0))
  assert draws.dtype == jnp.int32 and draws.shape == (n,)
  counts = np.bincount(np.asarray(draws), minlength=6)
  assert scipy.stats.chisquare(counts, probs * n).pvalue > 1e-4, (counts / n, probs)
  # At this n a sharper or flatter softmax (temperature 0.9 or 1.1) is rejected.
  for t in (0.9, 1.1):
    wrong = softmax(logits / t)
    assert scipy.stats.chisquare(counts, wrong * n).pvalue < 1e-6
  # Each position draws independently.
  other = electra.sample_tokens(rows, jax.random.key(1))
  assert abs(np.corrcoef(np.asarray(draws), np.asarray(other))[0, 1]) < 5 / math.sqrt(n)


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_loss_matches_numpy_reference(setup):
  model, params, batch = setup['model'], setup['params'], setup['batch']
  rng = jax.random.key(7)
  out = jax.tree.map(np.asarray, setup['forward'](params, batch, rng))
  # The loss under jax.jit, with its gradient.
  loss_and_grad = jax.value_and_grad(setup['objective'].loss_fn, has_aux=True)
  (loss, metrics), grads = jax.jit(functools.partial(loss_and_grad, model=model))(
    params, batch, rng
  )

  # The pieces are the model's own outputs on the right inputs.
  @jax.jit
  def both(corrupted):
    rest = (batch['segment_ids'], batch['positions'])
    generate = model.apply({'params': params}, batch['inputs'], *rest, method='generate')
    return generate, model.apply({'params': params}, corrupted, *rest, method='discriminate')

  generator_logits, discriminator_logits = both(out['corrupted'])
  np.testing.assert_allclose(out['generator_logits'], generator_logits, rtol=1e-5, atol=1e-5)
  masked, tokens = batch['weights'] > 0, batch['targets']
  np.testing.assert_array_equal(out['corrupted'], np.where(masked, out['sampled'], tokens))
  np.testing.assert_allclose(
    out['discriminator_logits'], discriminator_logits, rtol=1e-5, atol=1e-5
  )

  # NumPy recomputation in float64.
  logits = out['generator_logits'].astype(np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  xent = -np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
  mlm_loss = xent[masked].mean()
  labels = masked & (out['sampled'] != tokens)
  np.testing.assert_array_equal(out['replaced'], labels)
  real = batch['segment_ids'] > 0
  x = out['discriminator_logits'].astype(np.float64)
  bce = -np.where(labels, _log_sigmoid(x), _log_sigmoid(-x))
  rtd_loss = bce[real].mean()
  np.testing.assert_allclose(loss, mlm_loss + 50.0 * rtd_loss, rtol=1e-5)

  def check(name, total, weight):
    np.testing.assert_allclose(metrics[name][0], total, rtol=1e-5)
    np.testing.assert_allclose(metrics[name][1], weight, rtol=1e-6)

  n_masked, n_real = masked.sum(), real.sum()
  check('loss', mlm_loss + 50.0 * rtd_loss, 1.0)
  check('mlm_loss', xent[masked].sum(), n_masked)
  check('mlm_accuracy', (logits.argmax(-1) == tokens)[masked].sum(), n_masked)
  check('rtd_loss', bce[real].sum(), n_real)
  check('rtd_accuracy', ((x > 0) == labels)[real].sum(), n_real)
  check('replaced_fraction', labels.sum(), n_real)
  check('sampled_accuracy', (out['sampled'] == tokens)[masked].sum(), n_masked)
  # The discriminator scores every non-padding token, not only the masked ones.
  assert n_real == 80 and n_masked < n_real / 2
  assert labels.sum() > 0 and not (labels & ~masked).any()

  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  for part in ('generator', 'discriminator'):
    assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads[part])) > 0, part


def test_gathered_generator_is_the_all_positions_one(setup):
  """With MLM's gathered positions the generator projects only the masked ones: the same
  logits there, the same MLM loss, and its draws put back at their positions."""
  params, full = setup['params'], setup['batch']
  gathered = mlm.make_preprocess(_objective_cfg(mask_rate=0.4), TOKENIZER, seed=0)(_rows())
  np.testing.assert_array_equal(gathered['inputs'], full['inputs'])  # Nothing overflowed.
  positions, slots = gathered['masked_positions'], gathered['masked_weights'] > 0
  assert positions.shape[1] < full['inputs'].shape[1] and slots.sum() == (full['weights'] > 0).sum()
  out_full = jax.tree.map(np.asarray, setup['forward'](params, full, jax.random.key(7)))
  out = jax.tree.map(np.asarray, setup['forward'](params, gathered, jax.random.key(7)))
  rows = np.arange(positions.shape[0])[:, None]
  np.testing.assert_allclose(
    out['generator_logits'][slots], out_full['generator_logits'][rows, positions][slots],
    rtol=1e-5, atol=1e-5,
  )  # fmt: skip
  expected = full['targets'].copy()
  expected[rows.repeat(positions.shape[1], 1)[slots], positions[slots]] = out['sampled'][slots]
  np.testing.assert_array_equal(out['corrupted'], expected)
  _, metrics_full = setup['loss'](params, full, jax.random.key(7))
  _, metrics = setup['loss'](params, gathered, jax.random.key(7))
  for name in ('mlm_loss', 'mlm_accuracy'):
    np.testing.assert_allclose(metrics[name], metrics_full[name], rtol=1e-5)
  assert float(metrics['dropped_predictions'][0]) == 0.0


def test_a_right_generator_replaces_nothing(setup):
  """Where the generator draws the original token, the label is "original"."""
  params, batch = setup['params'], setup['batch']
  target = 42  # Make the generator all but certain of this token everywhere.
  bias = params['generator']['mlm_bias'].at[target].set(100.0)
  params = {**params, 'generator': {**params['generator'], 'mlm_bias': bias}}
  masked = batch['weights'] > 0
  # Half of the masked positions hold `target` originally, the other half something else.
  half = masked & (np.cumsum(masked, axis=1) % 2 == 0)
  batch = {**batch, 'targets': np.where(half, target, batch['targets']).astype(np.int32)}
  assert (masked & (batch['targets'] != target)).any()
  out = jax.tree.map(np.asarray, setup['forward'](params, batch, jax.random.key(3)))
  assert (out['sampled'][masked] == target).all()
  np.testing.assert_array_equal(out['replaced'], masked & (batch['targets'] != target))
  _, metrics = setup['loss'](params, batch, jax.random.key(3))
  assert float(metrics['replaced_fraction'][0]) == (masked & (batch['targets'] != target)).sum()
  assert float(metrics['sampled_accuracy'][0]) == half.sum()


def test_no_rtd_gradient_reaches_the_generator(setup):
  """RTD trains the discriminator and the shared embeddings; the generator only via MLM."""
  params, batch, model = setup['params'], setup['batch'], setup['model']

  @jax.jit
  def metric_grads(p):
    def total(p, name):
      _, metrics = setup['objective'].loss_fn(p, batch, jax.random.key(5), model=model)
      return metrics[name][0]

    return jax.grad(total)(p, 'rtd_loss'), jax.grad(total)(p, 'mlm_loss')

  rtd, mlm_grads = metric_grads(params)
  assert all((g == 0).all() for g in jax.tree.leaves(rtd['generator']))
  assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(rtd['discriminator']))
  generator_leaves = jax.tree.leaves(mlm_grads['generator'])
  assert sum(np.abs(g).sum() > 0 for g in generator_leaves) == len(generator_leaves)
  # MLM reaches the discriminator's subtree only through the shared embedding block.
  discriminator_encoder = mlm_grads['discriminator']['encoder']
  discriminator_own = {k: v for k, v in mlm_grads['discriminator'].items() if k != 'encoder'}
  discriminator_own['blocks'] = {k: v for k, v in discriminator_encoder.items() if k != 'embed'}
  discriminator_own['project'] = discriminator_encoder['embed']['project']
  assert all((g == 0).all() for g in jax.tree.leaves(discriminator_own))
  shared = mlm_grads['discriminator']['encoder']['embed']
  for name in ('token', 'position', 'token_type', 'norm'):
    assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(shared[name])), name


def test_losses_are_deterministic(setup):
  params, batch = setup['params'], setup['batch']
  forward = setup['forward']
  a, b = forward(params, batch, jax.random.key(1)), forward(params, batch, jax.random.key(1))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  other = forward(params, batch, jax.random.key(2))
  assert (np.asarray(other['sampled']) != np.asarray(a['sampled'])).any()
  # Evaluation (rng=None) samples with a fixed key: the same every time.
  first, second = setup['loss'](params, batch, None), setup['loss'](params, batch, None)
  np.testing.assert_array_equal(first[0], second[0])
  assert np.isfinite(first[0])


def test_configure_and_the_objective_api():
  cfg = _objective_cfg(module='objectives.electra', generator_fraction=0.5, rtd_weight=10.0)
  objective = api.load('objectives.electra', cfg)
  assert (objective.generator_fraction, objective.rtd_weight) == (0.5, 10.0)
  assert objective.FRAMING == ('cls_id', 'sep_id') and objective.SHOW == 'masked'
  defaults = electra.configure(_objective_cfg())
  assert (defaults.generator_fraction, defaults.rtd_weight) == (0.25, 50.0)
  model = objective.build_model(presets.get_config('electra-small'))
  assert (model.generator_cfg.d_model, model.generator_cfg.num_heads) == (128, 2)
  with pytest.raises(ValueError, match='rtd_weight=-1.0'):
    electra.configure(_objective_cfg(rtd_weight=-1.0))
  with pytest.raises(ValueError, match='generator_fraction=1.5'):
    electra.configure(_objective_cfg(generator_fraction=1.5)).build_model(
      presets.get_config('electra-small')
    )
  summary = objective.eval_summary({'mlm_loss': 2.0, 'rtd_loss': 0.5, 'loss': 99.0})
  assert summary['loss'] == 2.0 + 10.0 * 0.5
  assert summary['mlm_perplexity'] == pytest.approx(math.exp(2.0))
