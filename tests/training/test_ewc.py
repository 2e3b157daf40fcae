"""EWC (training/optimizers.ewc_penalty, training/fisher.py, tools/fisher.py): the penalty's
gradient by hand, the empirical Fisher as the mean of per-example squared gradients by
hand, its file accumulated over tasks, and a train.py run held to its init_from by it."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from configs import glue as glue_config
from evaluation import during_training
from models import heads
from models.transformer_config import TransformerConfig
from objectives import classification
from tests.training import runs
from training import compressed_run, config_checks, optimizers
from training import fisher as fisher_lib


def test_ewc_penalty_adds_strength_fisher_times_the_distance_to_the_anchor():
  params = {'w': jnp.array([1.0, 2.0, 3.0]), 'b': jnp.array(0.5)}
  tx = optimizers.ewc_penalty(10.0)
  state = tx.init(params)
  fisher = {'w': jnp.array([0.1, 0.0, 2.0]), 'b': jnp.array(1.0)}
  state = optimizers.with_fisher((state, optax.EmptyState()), fisher)[0]
  moved = {'w': jnp.array([1.5, 0.0, 3.0]), 'b': jnp.array(0.0)}
  grads = {'w': jnp.array([1.0, 1.0, 1.0]), 'b': jnp.array(0.0)}
  out, _ = tx.update(grads, state, moved)
  np.testing.assert_allclose(out['w'], [1.0 + 10 * 0.1 * 0.5, 1.0, 1.0])
  np.testing.assert_allclose(out['b'], 10 * 1.0 * -0.5)
  # It is the gradient of strength / 2 x sum F (theta - theta*)^2.
  penalty = lambda p: 5.0 * sum(  # noqa: E731
    jnp.sum(f * (x - a) ** 2) for f, x, a in zip(jax.tree.leaves(fisher), jax.tree.leaves(p),
                                                 jax.tree.leaves(params), strict=True)
  )  # fmt: skip
  by_hand = jax.grad(penalty)(moved)
  zero, _ = tx.update(jax.tree.map(jnp.zeros_like, grads), state, moved)
  for a, b in zip(jax.tree.leaves(zero), jax.tree.leaves(by_hand), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  with pytest.raises(ValueError, match='no EWC state'):
    optimizers.with_fisher(optax.EmptyState(), fisher)


def test_build_rejects_ewc_with_frozen_parameters_and_checks_need_a_fisher():
  config = base.get_config()
  config.optimizer.ewc_lambda = 1.0
  config.optimizer.freeze = 'encoder'
  with pytest.raises(ValueError, match='does not combine with frozen'):
    optimizers.build(config.optimizer, 1000)
  config.optimizer.freeze = ''
  with pytest.raises(ValueError, match='needs optimizer.ewc_fisher'):
    config_checks.validate(config)


def test_diagonal_fisher_is_the_mean_of_per_example_squared_gradients():
  cfg = TransformerConfig(vocab_size=30, num_layers=1, d_model=8, num_heads=2, mlp_dim=16,
                          max_len=8, dropout_rate=0.0)  # fmt: skip
  model = heads.SequenceClassifier(cfg, 2)
  objective = classification.Classification(task='sst2', num_labels=2)
  rng = np.random.default_rng(0)
  n, length = 5, 6
  batch = {
    'inputs': rng.integers(1, 30, (n, length)).astype(np.int32),
    'segment_ids': np.ones((n, length), np.int32),
    'positions': np.tile(np.arange(length, dtype=np.int32), (n, 1)),
    'token_types': np.zeros((n, length), np.int32),
    'example_id': np.arange(n, dtype=np.int32),
    'label': np.array([0, 1, 1, 0, 1], np.float32),
  }
  batch['segment_ids'][4] = 0  # A padding row: weighs nothing.
  params = model.init(jax.random.key(0), batch['inputs'], batch['segment_ids'])['params']
  fisher, count = fisher_lib.diagonal_fisher(objective, model, params, [batch], examples=100)
  assert count == 4
  row_grad = jax.jit(jax.grad(lambda p, row: objective.loss_fn(p, row, None, model=model)[0]))
  by_hand = None
  for i in range(4):
    g = row_grad(params, {k: v[i : i + 1] for k, v in batch.items()})
    sq = jax.tree.map(lambda x: np.asarray(x) ** 2, g)
    by_hand = sq if by_hand is None else jax.tree.map(np.add, by_hand, sq)
  for a, b in zip(jax.tree.leaves(fisher), jax.tree.leaves(by_hand), strict=True):
    np.testing.assert_allclose(a, b / 4, rtol=1e-4, atol=1e-10)


@pytest.mark.slow
def test_tools_fisher_and_a_run_held_to_its_init_from(keyword_sst2_run, tmp_path, spm_path):
  root, run = keyword_sst2_run
  first = tmp_path / 'a.npz'
  command = [sys.executable, '-m', 'tools.fisher', f'--run={run}', f'--out={first}',
             '--examples=16']  # fmt: skip
  done = subprocess.run(command, env=runs.env(), cwd=runs.ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'over 16 examples' in done.stdout
  with np.load(first) as a:
    tree = {name: a[name] for name in a.files}
  both = tmp_path / 'ab.npz'
  fisher_lib.save(str(both), tree, accumulate=str(first))  # The next task's, accumulated.
  with np.load(first) as a, np.load(both) as ab:
    assert set(a.files) == set(ab.files) and 'classifier/kernel' in a.files
    for name in a.files:
      np.testing.assert_allclose(ab[name], 2 * a[name], rtol=1e-6)
    assert max(float(a[name].max()) for name in a.files) > 0
  # A huge strength with a unit Fisher holds the weights near init_from; without it the
  # same steps move them.
  ones = tmp_path / 'ones.npz'
  fisher_lib.save(str(ones), {name: np.ones_like(v) for name, v in tree.items()})
  start = compressed_run.read_run(run, base.get_config()).params
  moved = {}
  for name in ('plain', 'ewc'):
    config = glue_config.get_config('sst2')
    config.data.glue_dir, config.data.tokenizer_path = os.path.join(root, 'glue'), spm_path
    config.init_from, config.eval_every_steps, config.total_steps = run, 0, 4
    config.seq_len, config.batch_size, config.peak_flops_per_device = 32, 8, 1e9
    config.optimizer.learning_rate, config.optimizer.warmup_ratio = 1e-2, 0.0
    if name == 'ewc':
      config.optimizer.ewc_lambda, config.optimizer.ewc_fisher = 1e6, str(ones)
    workdir = str(tmp_path / name)
    during_training.train_and_evaluate(config, workdir)
    after = compressed_run.read_run(workdir, base.get_config()).params
    # The L2 distance over the encoder (the head is fresh in neither: both load it).
    distances = jax.tree.map(lambda a, b: np.sum((a - b) ** 2), after['encoder'], start['encoder'])
    moved[name] = float(np.sqrt(sum(jax.tree.leaves(distances))))
  # Adam normalizes the pull too, so EWC keeps the weights within about a step of the
  # anchor, while the plain run drifts a step further every step (measured: 0.41 and 4.67).
  assert moved['plain'] > 0.1 and moved['ewc'] < 0.3 * moved['plain'], moved
