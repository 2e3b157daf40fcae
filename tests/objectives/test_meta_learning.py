"""Meta-learning: N-way K-shot episodes (data/episodes.py) with disjoint support and query
and held-out classes, prototypical networks' loss by hand, first-order MAML's inner loop
and first-order gradient by hand, Reptile's meta-direction by hand, and a short
configs/meta.py run through train.py."""

import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import meta as meta_config
from data import episodes as episodes_lib
from data import sources
from evaluation import checkpoint_eval, during_training
from models import heads
from models.transformer_config import TransformerConfig
from objectives import api
from objectives.shared import episodes
from tests.training import finetune_runs
from tools import show

CLASS_WORDS = ['money', 'house', 'stock', 'school', 'science', 'people', 'vote', 'goal']


def write_news(folder, per_class: int = 12) -> None:
  """THUCNews's layout (dev.txt / test.txt 'headline<TAB>class', class.txt) with 8 classes,
  each headline carrying its class's word among filler words."""
  rng = random.Random(0)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'class.txt'), 'w') as f:
    f.write('\n'.join(CLASS_WORDS))
  for split in ('dev', 'test'):
    with open(os.path.join(folder, f'{split}.txt'), 'w') as f:
      for i in range(per_class * len(CLASS_WORDS)):
        words = rng.choices(finetune_runs._FILLER, k=4)
        words.insert(rng.randint(0, 4), CLASS_WORDS[i % len(CLASS_WORDS)])
        f.write(f'{" ".join(words)}\t{i % len(CLASS_WORDS)}\n')


def _records(n_per_class=10, classes=6):
  return [{'text_a': f'r{i}', 'text_b': None, 'label': i % classes, 'idx': i}
          for i in range(n_per_class * classes)]  # fmt: skip


def test_episodes_have_n_classes_k_shots_and_disjoint_queries():
  records = _records()
  eps = episodes_lib.Episodes(records, {0, 1, 2, 3, 4}, ways=3, shots=2, queries=4, count=50,
                              seed=0)  # fmt: skip
  assert len(eps) == 50
  seen_classes = set()
  for i in range(50):
    e = eps[i]
    assert len(e['records']) == 3 * (2 + 4) and len(set(e['classes'])) == 3
    assert set(e['classes']) <= {0, 1, 2, 3, 4}
    seen_classes |= set(e['classes'])
    ids = [r['idx'] for r in e['records']]
    assert len(set(ids)) == len(ids)  # Support and query disjoint, no record twice.
    for position, c in enumerate(e['classes']):
      mine = [k for k, lab in enumerate(e['labels']) if lab == position]
      assert len(mine) == 6 and all(e['records'][k]['label'] == c for k in mine)
      assert [e['query'][k] for k in mine] == [False, False, True, True, True, True]
  assert seen_classes == {0, 1, 2, 3, 4}
  assert eps[7] == episodes_lib.Episodes(records, {0, 1, 2, 3, 4}, ways=3, shots=2, queries=4,
                                         count=50, seed=0)[7]  # fmt: skip
  other = episodes_lib.Episodes(records, {0, 1, 2, 3, 4}, ways=3, shots=2, queries=4, count=50,
                                seed=1)  # fmt: skip
  assert other[7] != eps[7]
  with pytest.raises(ValueError, match='need at least 6 classes'):
    episodes_lib.Episodes(records, {0, 1, 2, 3, 4}, ways=6, shots=1, queries=1, count=1, seed=0)
  with pytest.raises(ValueError, match='fewer than shots'):
    episodes_lib.Episodes(records, {0, 1}, ways=2, shots=8, queries=3, count=1, seed=0)


def test_train_episodes_avoid_and_eval_episodes_use_only_the_held_out_classes(tmp_path):
  write_news(tmp_path)
  config = meta_config.get_config('thucnews,prototypical')
  config.data.clue_dir = str(tmp_path)
  config.data.episodes.held_out = '6,7'
  config.data.episodes.ways = 2
  train = sources.load_documents(config.data, 'train')
  evaluation = sources.load_documents(config.data, 'eval')
  assert len(train) == 2000 and len(evaluation) == 100
  assert {c for i in range(200) for c in train[i]['classes']} == {0, 1, 2, 3, 4, 5}
  assert {c for i in range(100) for c in evaluation[i]['classes']} == {6, 7}
  config.data.episodes.held_out = '6,9'
  with pytest.raises(ValueError, match=r'no eval record has label\(s\) \[9\]'):
    sources.load_documents(config.data, 'eval')


def _tiny_episode_batch(episodes=2, ways=3, shots=2, queries=2, length=6, vocab=40, pad=True):
  rng = np.random.default_rng(0)
  m = ways * (shots + queries)
  tokens = rng.integers(5, vocab, (episodes, m, length)).astype(np.int32)
  segment = np.ones((episodes, m, length), np.int32)
  segment[:, :, length - 2 :] = 0  # Padding tokens at the end of each record.
  labels = np.repeat(np.arange(ways), shots + queries)
  query = np.tile(np.r_[np.zeros(shots), np.ones(queries)], ways).astype(np.float32)
  batch = {
    'inputs': np.where(segment > 0, tokens, 0),
    'segment_ids': segment,
    'positions': np.broadcast_to(np.arange(length, dtype=np.int32), segment.shape).copy(),
    'token_types': np.zeros_like(segment),
    'onehot': np.broadcast_to(np.eye(ways, dtype=np.float32)[labels], (episodes, m, ways)).copy(),
    'query': np.broadcast_to(query, (episodes, m)).copy(),
    'example_id': np.arange(episodes, dtype=np.int32),
  }
  if pad:  # The last episode is the loader's padding: all zeros.
    for name in ('inputs', 'segment_ids', 'positions', 'onehot', 'query'):
      batch[name][-1] = 0
    batch['example_id'][-1] = -1
  return batch


@pytest.fixture(scope='module')
def encoder():
  cfg = TransformerConfig(vocab_size=40, num_layers=1, d_model=16, num_heads=2, mlp_dim=32,
                          max_len=16, dropout_rate=0.0, attention_dropout_rate=0.0)  # fmt: skip
  model = heads.Backbone(cfg)
  shape = np.zeros((2, 6), np.int32)
  params = model.init(jax.random.key(0), shape, shape + 1, shape, shape)['params']
  return model, params


def _mean_embeddings(model, params, batch):
  """[E, M, D] by hand: the encoder per record, averaged over its real tokens."""
  e, m, length = batch['inputs'].shape
  out = np.zeros((e, m, 16))
  for i in range(e):
    for j in range(m):
      seg = batch['segment_ids'][i, j]
      states, _ = model.apply({'params': params}, batch['inputs'][i, j][None], seg[None],
                              batch['positions'][i, j][None], batch['token_types'][i, j][None])  # fmt: skip
      real = seg > 0
      out[i, j] = np.asarray(states[0])[real].mean(0) if real.any() else 0.0
  return out


def _config(module, **keys):
  config = meta_config.get_config('thucnews,' + module)
  for key, value in keys.items():
    config.objective[key] = value
  return api.load(config.objective.module, config.objective)


def test_prototypical_loss_by_hand(encoder):
  model, params = encoder
  batch = _tiny_episode_batch()
  objective = _config('prototypical')
  loss, metrics = jax.jit(lambda p, b: objective.loss_fn(p, b, None, model=model))(params, batch)
  x = _mean_embeddings(model, params, batch)[0]  # The real episode: [M, D].
  labels, query = np.argmax(batch['onehot'][0], -1), batch['query'][0] > 0
  centres = np.stack([x[(labels == n) & ~query].mean(0) for n in range(3)])
  logits = -((x[:, None] - centres[None]) ** 2).sum(-1)  # [M, N]
  log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
    - logits.max(-1, keepdims=True)  # fmt: skip
  by_hand = -log_p[query, labels[query]]
  np.testing.assert_allclose(float(loss), by_hand.mean(), rtol=2e-4)
  assert float(metrics['loss'][1]) == 6.0  # 3 classes x 2 queries; the padding has none.
  assert float(metrics['accuracy'][0]) == (logits[query].argmax(-1) == labels[query]).sum()


def test_fomaml_adapts_on_the_support_and_takes_the_first_order_gradient(encoder):
  model, params = encoder
  batch = _tiny_episode_batch(episodes=1, pad=False)
  objective = _config('fomaml', inner_steps=1, inner_lr=0.005)
  one = jax.tree.map(jnp.asarray, batch)
  support = 1.0 - one['query']
  labels = jnp.argmax(one['onehot'], -1)

  def logits_of(p, head):
    x = jnp.asarray(objective_embed(model, p, one))
    return jnp.einsum('emd,end->emn', x, head[0]) + head[1][:, None, :]

  def objective_embed(model, p, b):
    return episodes.embed(p, b, None, model, 'mean')

  def xent(logits, weights):
    log_p = jax.nn.log_softmax(logits)
    picked = jnp.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    return -jnp.sum(picked * weights) / jnp.sum(weights)

  # By hand: prototypes -> head; one SGD step on the support loss; the query loss after it.
  x = objective_embed(model, params, one)
  centres = episodes.prototypes(x, one['onehot'], one['query'])
  head = (2.0 * centres, -jnp.sum(centres**2, -1))
  # Jitted (each by-hand step op by op took 6 s); the arithmetic is the same.
  grads = jax.jit(jax.grad(lambda w: xent(logits_of(*w), support)))((params, head))
  adapted = jax.tree.map(lambda w, g: w - 0.005 * g, (params, head), grads)
  query_loss = jax.jit(lambda w: xent(logits_of(*w), one['query']))(adapted)
  loss, _ = jax.jit(lambda p: objective.loss_fn(p, one, None, model=model))(params)
  np.testing.assert_allclose(float(loss), float(query_loss), rtol=1e-4)
  # The support step lowered the support loss (the inner loop adapts).
  support_loss = jax.jit(lambda w: xent(logits_of(*w), support))
  assert float(support_loss(adapted)) < float(support_loss((params, head)))
  # First order: the gradient is the query loss's gradient at the adapted encoder weights.
  got = jax.jit(jax.grad(lambda p: objective.loss_fn(p, one, None, model=model)[0]))(params)
  want = jax.jit(jax.grad(lambda p: xent(logits_of(p, adapted[1]), one['query'])))(adapted[0])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-6)


def test_reptile_gradient_is_theta_minus_the_mean_adapted_weights(encoder):
  """One inner step at rate a on all of an episode's records: phi = theta - a g, so the
  gradient theta - mean(phi) is a times the mean of the episodes' all-record gradients."""
  model, params = encoder
  batch = jax.tree.map(jnp.asarray, _tiny_episode_batch(episodes=2, pad=False))
  objective = _config('reptile', inner_steps=1, inner_lr=0.1)
  rng = jax.random.key(0)  # Training; this encoder has no dropout of any kind.
  got = jax.jit(jax.grad(lambda p: objective.loss_fn(p, batch, rng, model=model)[0]))(params)

  def all_record_gradient(i):
    one = jax.tree.map(lambda a: a[i : i + 1], batch)
    labels = jnp.argmax(one['onehot'], -1)
    centres = episodes.prototypes(
      episodes.embed(params, one, None, model, 'mean'), one['onehot'], one['query']
    )

    def loss(p):
      x = episodes.embed(p, one, None, model, 'mean')
      logits = jnp.einsum('emd,end->emn', x, 2.0 * centres) - jnp.sum(centres**2, -1)[:, None]
      log_p = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(log_p, labels[..., None], -1))

    return jax.jit(jax.grad(loss))(params)

  first, second = all_record_gradient(0), all_record_gradient(1)
  want = jax.tree.map(lambda a, b: 0.1 * (a + b) / 2, first, second)
  # theta - phi is a difference of float32 weights: a few ulps of a weight (~1e-7) apart.
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=5e-7)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want)) > 1e-3
  # Evaluation (no rng) is FOMAML's: adapt on the support, score the queries.
  fomaml = _config('fomaml', inner_steps=1, inner_lr=0.1)
  evaluate = lambda o: jax.jit(lambda p: o.loss_fn(p, batch, None, model=model)[0])(params)  # noqa: E731
  assert float(evaluate(objective)) == pytest.approx(float(evaluate(fomaml)), rel=1e-6)


@pytest.mark.slow
def test_meta_training_runs_and_scores_held_out_episodes(spm_path, tmp_path):
  """Prototypical networks through the trainer and eval.py's evaluation (FOMAML's loss and
  gradient are checked by hand above; its train step takes 40 s to compile on 8 CPU
  devices, so its run through train.py is the README's measured one)."""
  write_news(tmp_path / 'news')
  config = finetune_runs.tiny(meta_config.get_config('thucnews,prototypical'), spm_path, tmp_path)
  config.data.clue_dir = str(tmp_path / 'news')
  config.data.episodes.held_out, config.data.episodes.ways = '6,7', 2
  config.data.episodes.shots, config.data.episodes.queries = 2, 2
  config.data.episodes.eval_count = 8
  config.batch_size, config.seq_len = 8, 16  # 8 episodes: one per test device.
  config.total_steps = config.eval_every_steps = config.checkpoint_every_steps = 6
  config.log_every_steps = 3
  config.optimizer.learning_rate = 1e-3
  workdir = str(tmp_path / 'run')
  during_training.train_and_evaluate(config, workdir)
  result = checkpoint_eval.evaluate_checkpoint(config, workdir)
  assert result['step'] == 6 and 0.0 <= result['accuracy'] <= 1.0
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    logged = [json.loads(line) for line in f]
  assert [r['step'] for r in logged if 'loss' in r] == [3, 6]
  for r in (r for r in logged if 'loss' in r):  # Tokens: each episode's 2 x (2 + 2) records.
    assert r['tokens_per_sec'] * r['seconds_per_step'] == pytest.approx(8 * 8 * 16, rel=1e-6)
  evals = [r for r in logged if 'eval/accuracy' in r]
  assert evals and evals[-1]['eval/accuracy'] == pytest.approx(result['accuracy'])
  # The run as another run's init_from, scored before any step: the same figures.
  start = config.copy_and_resolve_references()
  start.init_from = workdir
  for size in ('num_layers', 'd_model', 'num_heads', 'mlp_dim'):
    start.model[size] = None
  untrained = checkpoint_eval.evaluate_init_from(start, str(tmp_path / 'next'))
  assert untrained['accuracy'] == pytest.approx(result['accuracy'])
  assert untrained['loss'] == pytest.approx(result['loss']) and untrained['fresh'] == []
  lines = show.show(config, workdir, num_examples=1, split='eval')
  assert '2-way episode' in lines[1] and len(lines) == 2 + 2 * (2 + 2)
  assert sum('support:' in line for line in lines) == sum('query:' in line for line in lines) == 4


def test_passes_per_row_count_the_inner_loops():
  """The FLOP count's forward + backward passes per episode (a forward alone 1/3):
  prototypical one; FOMAML the prototypes' forward, 3 inner steps and the query pass;
  Reptile the prototypes' forward, 3 inner steps and the adapted logits' forward."""
  passes = {m: api.passes_per_row(_config(m), None) for m in ('prototypical', 'fomaml', 'reptile')}
  assert passes == pytest.approx({'prototypical': 1.0, 'fomaml': 3 + 4 / 3, 'reptile': 3 + 2 / 3})
