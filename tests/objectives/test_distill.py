"""Distillation losses against NumPy written out by hand, under jit; layer mappings; the
student made of teacher layers; the teacher's terms inside one objective call."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from models import heads, presets, student
from objectives import api, distill
from objectives.shared import distillation as losses

RNG = np.random.default_rng(0)


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_soft_kl_by_hand_and_zero_when_equal():
  s, t = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
  w = np.array([1.0, 1.0, 0.0])
  total, weight = jax.jit(losses.soft_kl, static_argnums=3)(s, t, w, 2.0)
  log_s, log_t = _log_softmax(s / 2), _log_softmax(t / 2)
  kl = (np.exp(log_t) * (log_t - log_s)).sum(-1)
  np.testing.assert_allclose(total, 4.0 * (kl[0] + kl[1]), rtol=1e-5)
  assert weight == 2.0
  assert abs(float(losses.soft_kl(t, t, w, 2.0)[0])) < 1e-6


def test_cosine_pkd_and_mse_by_hand():
  s, t = RNG.normal(size=(2, 4, 6)), RNG.normal(size=(2, 4, 6))
  w = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)
  cos = (s * t).sum(-1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(t, axis=-1)
  total, weight = jax.jit(losses.hidden_cosine)(s, t, w)
  np.testing.assert_allclose(total, ((1 - cos) * w).sum(), rtol=1e-5)
  assert weight == 4
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  total, weight = jax.jit(losses.normalized_mse)(s[:, 0], t[:, 0], w[:, 0])
  np.testing.assert_allclose(total, ((unit(s[:, 0]) - unit(t[:, 0])) ** 2).sum(), rtol=1e-5)
  total, weight = jax.jit(losses.mse)(s, t, w)
  np.testing.assert_allclose(
    total / weight, (((s - t) ** 2).sum(-1) * w).sum() / (4 * 6), rtol=1e-5
  )


def test_attention_scores_mse_counts_only_pairs_inside_a_segment():
  q, k = RNG.normal(size=(2, 3, 2, 4)), RNG.normal(size=(2, 3, 2, 4))
  scores = jax.jit(losses.attention_scores)(q, k)
  np.testing.assert_allclose(scores[1, 1, 2, 0], q[1, 2, 1] @ k[1, 0, 1] / 2.0, rtol=1e-5)
  segments = np.array([[1, 1, 0], [1, 2, 2]])
  other = scores + 1.0  # Every score off by one: the loss is 1 per counted (pair, head).
  total, weight = jax.jit(losses.score_mse)(other, scores, segments)
  # Row 0: 2 x 2 real pairs; row 1: 1 + 2 x 2 pairs (no pair across segments); 2 heads.
  assert weight == (4 + 5) * 2 and abs(float(total) - float(weight)) < 1e-3


def test_relation_kl_by_hand_with_relation_heads_other_than_attention_heads():
  # Student 2 heads x 3, teacher 3 heads x 4: widths 6 and 12, split into 2 relation heads.
  qs, ks = RNG.normal(size=(1, 3, 2, 3)), RNG.normal(size=(1, 3, 2, 3))
  qt, kt = RNG.normal(size=(1, 3, 3, 4)), RNG.normal(size=(1, 3, 3, 4))
  segments = np.array([[1, 1, 0]])
  total, weight = jax.jit(losses.relation_kl, static_argnums=3)((qs, ks), (qt, kt), segments, 2)

  def log_rel(q, k):
    q, k = q.reshape(3, 2, -1)[:2], k.reshape(3, 2, -1)[:2]  # Real tokens only.
    scores = np.einsum('qhd,khd->hqk', q, k) / np.sqrt(q.shape[-1])
    return _log_softmax(scores)

  ls, lt = log_rel(qs[0], ks[0]), log_rel(qt[0], kt[0])
  expected = (np.exp(lt) * (lt - ls)).sum()
  np.testing.assert_allclose(total, expected, rtol=1e-4)
  assert weight == 2 * 2
  same = losses.relation_kl((qt, kt), (qt, kt), segments, 2)[0]
  assert abs(float(same)) < 1e-5


@pytest.mark.parametrize(
  'method, spec, strategy, student, teacher, expected',
  [
    ('distilbert', '', 'skip', 3, 6, ((0, 1, 2), (1, 3, 5))),
    ('tinybert', '', 'skip', 4, 12, ((0, 1, 2, 3), (2, 5, 8, 11))),
    ('pkd', '', 'skip', 3, 6, ((0, 1), (1, 3))),  # BERT-PKD: teacher layers 2, 4 (1-based).
    ('pkd', '', 'last', 3, 6, ((0, 1), (3, 4))),  # The last M-1 below the top: 4, 5.
    ('minilm', '', 'skip', 3, 6, ((2,), (5,))),
    ('tinybert', '0,4', 'skip', 3, 6, ((0, 1), (0, 4))),
  ],
)
def test_layer_mapping(method, spec, strategy, student, teacher, expected):
  assert distill.mapped_layers(method, spec, strategy, student, teacher) == expected


def test_layer_mapping_errors_name_the_values():
  with pytest.raises(ValueError, match='layer_map'):
    distill.mapped_layers('tinybert', '', 'skip', 4, 6)
  with pytest.raises(ValueError, match='at most 3'):
    distill.mapped_layers('tinybert', '0,1,2,3', 'skip', 3, 6)


def test_take_layers_renumbers_the_chosen_teacher_layers():
  cfg = presets.get_config('bert-tiny', vocab_size=50, num_layers=4)
  model = heads.SequenceClassifier(cfg, 2)
  tokens = jnp.ones((1, 8), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), tokens, tokens, tokens)['params'])
  taken = student.take_layers(params, (1, 3))
  assert sorted(k for k in taken['encoder'] if k.startswith('block_')) == ['block_0', 'block_1']
  assert taken['encoder']['block_1'] is params['encoder']['block_3']
  assert (
    taken['classifier'] is params['classifier']
    and taken['encoder']['embed'] is params['encoder']['embed']
  )
  for bad in ((3, 1), (0, 4), ()):
    with pytest.raises(ValueError, match='Student layers'):
      student.take_layers(params, bad)


def _objective(method: str, **keys):
  c = base.get_config()
  c.objective.module = 'objectives.distill'
  c.objective.num_labels = 2
  c.objective.distill.method = method
  for k, v in keys.items():
    c.objective.distill[k] = v
  return api.load(c.objective.module, c.objective), c.objective


def test_objective_is_the_base_task_plus_declared_terms():
  objective, cfg = _objective('pkd', hard_weight=0.5, soft_weight=0.5, hidden_weight=100.0)
  assert api.is_task(objective) and api.distills(objective)
  assert api.loss_terms(objective, cfg) == {
    'loss': 0.5, 'distill/soft': 0.5, 'distill/patient': 100.0
  }  # fmt: skip
  with pytest.raises(ValueError, match='distill.method'):
    _objective('nope')


def test_tinybert_loss_with_projections_equals_its_terms_by_hand():
  """A 2-layer, 64-wide student against a 4-layer, 128-wide teacher: W_e and W_h learn the
  widths; the objective's loss is hand-summed from its terms, the teacher's output unused
  by the hard loss, and the teacher gets no gradient."""
  objective, cfg = _objective('tinybert', hard_weight=0.0, tinybert_stage='all', temperature=1.0)
  s_cfg = presets.get_config('bert-tiny', vocab_size=50, num_layers=2, d_model=64, mlp_dim=128)
  t_cfg = presets.get_config('bert-tiny', vocab_size=50, num_layers=4)
  s_model = objective.build_student(s_cfg, t_cfg)
  t_model = objective.build_teacher(t_cfg)
  assert isinstance(s_model, student.WithProjections)
  tokens = jnp.asarray(RNG.integers(5, 50, size=(2, 8)), jnp.int32)
  segments = jnp.asarray([[1] * 8, [1] * 5 + [0] * 3], jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
  batch = {
    'inputs': tokens, 'segment_ids': segments, 'positions': positions,
    'token_types': jnp.zeros_like(tokens), 'label': jnp.array([1.0, 0.0]),
  }  # fmt: skip
  sp = nn.unbox(s_model.init(jax.random.key(1), tokens, segments, positions)['params'])
  tp = nn.unbox(t_model.init(jax.random.key(2), tokens, segments, positions)['params'])
  assert sp['distill_hidden']['kernel'].shape == (64, 128)

  def loss(sp, tp):
    return objective.loss_fn(sp, batch, None, model=s_model, teacher=api.Teacher(t_model, tp))

  (total, metrics), (g_student, g_teacher) = jax.jit(
    jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
  )(sp, tp)
  terms = {k: float(metrics[k][0] / metrics[k][1]) for k in metrics if k.startswith('distill/')}
  assert set(terms) == {'distill/embedding', 'distill/attention', 'distill/hidden', 'distill/soft'}
  np.testing.assert_allclose(float(total), sum(terms.values()), rtol=1e-5)
  # By hand: the hidden term from the sown states through W_h (layer map 1, 3).
  _, s_state = s_model.apply({'params': sp}, tokens, segments, positions, mutable=['intermediates'])
  _, t_state = t_model.apply({'params': tp}, tokens, segments, positions, mutable=['intermediates'])
  w = np.asarray(sp['distill_hidden']['kernel'])
  b = np.asarray(sp['distill_hidden']['bias'])
  real = np.asarray(segments) > 0
  total_sq = 0.0
  for i, j in ((0, 1), (1, 3)):
    hs = np.asarray(s_state['intermediates']['encoder'][f'block_{i}']['output'][0]) @ w + b
    ht = np.asarray(t_state['intermediates']['encoder'][f'block_{j}']['output'][0])
    total_sq += ((hs - ht) ** 2).sum(-1)[real].sum()
  np.testing.assert_allclose(terms['distill/hidden'], total_sq / (real.sum() * 128), rtol=1e-4)
  assert float(jnp.abs(g_student['distill_hidden']['kernel']).sum()) > 0
  # The train step never differentiates the teacher; were it asked, the soft term would
  # reach it: what keeps it frozen is the step (tests/training/test_distill.py).
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g_teacher))
  # Without a teacher (evaluation) the loss is the base task's alone.
  hard, metrics = objective.loss_fn(sp, batch, None, model=s_model)
  assert 'distill/soft' not in metrics and np.isfinite(float(hard))


def test_pretraining_distillation_counts_the_masked_positions_only():
  """DistilBERT during pretraining: MLM's own loss plus soft targets at the gathered masked
  positions (their weights), by hand."""
  objective, cfg = _objective('distilbert', base='objectives.mlm', temperature=2.0)
  model_cfg = presets.get_config('bert-tiny', vocab_size=40, num_layers=2)
  s_model, t_model = (
    objective.build_student(model_cfg, model_cfg),
    objective.build_teacher(model_cfg),
  )
  tokens = jnp.asarray(RNG.integers(5, 40, size=(2, 8)), jnp.int32)
  batch = {
    'inputs': tokens, 'targets': tokens, 'segment_ids': jnp.ones_like(tokens),
    'positions': jnp.broadcast_to(jnp.arange(8), (2, 8)),
    'weights': jnp.zeros((2, 8)).at[:, 2].set(1.0),
    'masked_positions': jnp.asarray([[2, 0], [2, 5]], jnp.int32),
    'masked_targets': tokens[:, :2], 'masked_weights': jnp.asarray([[1.0, 0.0], [1.0, 1.0]]),
  }  # fmt: skip
  init = jax.random.key(3), tokens, batch['segment_ids'], batch['positions']
  sp, tp = (nn.unbox(m.init(*init)['params']) for m in (s_model, t_model))
  loss, metrics = jax.jit(
    lambda sp, tp: objective.loss_fn(
      sp, batch, None, model=s_model, teacher=api.Teacher(t_model, tp)
    )
  )(sp, tp)
  args = (tokens, batch['segment_ids'], batch['positions'])
  kw = dict(masked_positions=batch['masked_positions'])
  s_logits = np.asarray(s_model.apply({'params': sp}, *args, **kw))  # [2, 2, vocab]
  t_logits = np.asarray(t_model.apply({'params': tp}, *args, **kw))
  log_s, log_t = _log_softmax(s_logits / 2), _log_softmax(t_logits / 2)
  kl = (np.exp(log_t) * (log_t - log_s)).sum(-1)
  expected = 4.0 * (kl[0, 0] + kl[1, 0] + kl[1, 1])
  np.testing.assert_allclose(metrics['distill/soft'][0], expected, rtol=1e-4)
  assert float(metrics['distill/soft'][1]) == 3.0


def test_mobilebert_transfer_by_hand():
  """Every layer's feature-map MSE and per-head attention KL, summed over layers."""
  objective, cfg = _objective('mobilebert')
  model_cfg = presets.get_config('bert-tiny', vocab_size=40, num_layers=2)
  s_model, t_model = (
    objective.build_student(model_cfg, model_cfg),
    objective.build_teacher(model_cfg),
  )
  tokens = jnp.asarray(RNG.integers(5, 40, size=(2, 6)), jnp.int32)
  segments = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2], jnp.int32)
  batch = {
    'inputs': tokens, 'segment_ids': segments, 'token_types': jnp.zeros_like(tokens),
    'positions': jnp.broadcast_to(jnp.arange(6), (2, 6)), 'label': jnp.array([0.0, 1.0]),
  }  # fmt: skip
  init = jax.random.key(4), tokens, segments, batch['positions']
  sp = nn.unbox(s_model.init(*init)['params'])
  tp = nn.unbox(t_model.init(jax.random.key(5), *init[1:])['params'])
  _, metrics = objective.loss_fn(sp, batch, None, model=s_model, teacher=api.Teacher(t_model, tp))
  args = (tokens, segments, batch['positions'])
  sown = [
    m.apply({'params': p}, *args, mutable=['intermediates'])[1]['intermediates']['encoder']
    for m, p in ((s_model, sp), (t_model, tp))
  ]
  real = np.asarray(segments) > 0
  feature = attention = 0.0
  for i in range(2):
    a, b = (np.asarray(x[f'block_{i}']['output'][0]) for x in sown)
    feature += ((a - b) ** 2).sum(-1)[real].sum() / (real.sum() * 128)
    logs = []
    for x in sown:
      q, k = (np.asarray(x[f'block_{i}']['attention'][n][0]) for n in ('queries', 'keys'))
      scores = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
      scores = np.where(real[:, None, None, :], scores, -1e9)
      logs.append(_log_softmax(scores))
    kl = (np.exp(logs[1]) * (logs[1] - logs[0])).sum(-1)  # [batch, heads, q]
    attention += (kl * real[:, None, :]).sum() / (real.sum() * 2)
  value = lambda name: float(metrics[name][0] / metrics[name][1])  # noqa: E731
  np.testing.assert_allclose(value('distill/feature'), feature, rtol=1e-4)
  np.testing.assert_allclose(value('distill/attention'), attention, rtol=1e-4)
