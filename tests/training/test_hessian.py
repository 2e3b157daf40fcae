"""Hessian-vector products and per-block top eigenvalues (training/hessian.py), against
finite differences of the gradient and matrices whose eigenvalues are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training import hessian


def _loss(params, batch):
  """A small nonlinear model: squared error of tanh(x W1) W2."""
  hidden = jnp.tanh(batch['x'] @ params['w1'])
  return jnp.mean((hidden @ params['w2'] - batch['y']) ** 2)


def _problem():
  keys = jax.random.split(jax.random.key(0), 5)
  params = {'w1': jax.random.normal(keys[0], (4, 3)), 'w2': jax.random.normal(keys[1], (3, 2))}
  batch = {'x': jax.random.normal(keys[2], (8, 4)), 'y': jax.random.normal(keys[3], (8, 2))}
  vector = jax.tree.map(lambda p: jax.random.normal(keys[4], p.shape), params)
  return params, batch, vector


def test_hvp_equals_central_differences_of_the_gradient():
  params, batch, vector = _problem()
  loss = lambda p: _loss(p, batch)  # noqa: E731
  product = hessian.hvp(loss, params, vector)
  eps = 1e-2
  shifted = lambda s: jax.grad(loss)(jax.tree.map(lambda p, v: p + s * v, params, vector))  # noqa: E731
  difference = jax.tree.map(lambda a, b: (a - b) / (2 * eps), shifted(eps), shifted(-eps))
  for name in params:
    expected = np.asarray(difference[name])
    # Central differences err by O(eps^2) times the third derivative: ~1e-3 here.
    np.testing.assert_allclose(np.asarray(product[name]), expected, rtol=2e-2, atol=2e-3)
    assert np.abs(expected).max() > 0.1  # Not trivially zero.


def test_hvp_of_a_quadratic_is_the_matrix_times_the_vector():
  a = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 4.0]], np.float32)
  loss = lambda p: 0.5 * p['x'] @ jnp.asarray(a) @ p['x'] + jnp.sum(jnp.sin(p['y']))  # noqa: E731
  params = {'x': jnp.array([1.0, -2.0, 0.5]), 'y': jnp.array([0.3])}
  vector = {'x': jnp.array([0.5, 1.0, -1.0]), 'y': jnp.array([2.0])}
  product = hessian.hvp(loss, params, vector)
  np.testing.assert_allclose(np.asarray(product['x']), a @ np.array([0.5, 1.0, -1.0]), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(product['y']), [-np.sin(0.3) * 2.0], rtol=1e-5)


@pytest.mark.parametrize('eigenvalues', [(5.0, -2.0, 1.0), (1.0, -7.0, 3.0)])
def test_power_iteration_finds_the_eigenvalue_of_largest_magnitude(eigenvalues):
  rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
  matrix = jnp.asarray(rotation @ np.diag(eigenvalues) @ rotation.T, jnp.float32)
  value, used = hessian.power_iteration(
    lambda v: {'v': matrix @ v['v']}, {'v': jnp.ones(3)}, iterations=200, tol=1e-7
  )
  top = max(eigenvalues, key=abs)
  assert value == pytest.approx(top, rel=1e-3) and used < 200


def test_block_eigenvalues_are_each_blocks_own():
  """H = [[A, C], [C', B]]: the 'a' block's top eigenvalue is A's (6), not H's."""
  a = np.diag([6.0, 1.0]).astype(np.float32)
  b = np.diag([2.0, 0.5]).astype(np.float32)
  c = np.full((2, 2), 3.0, np.float32)
  full = np.block([[a, c], [c.T, b]])
  assert np.linalg.eigvalsh(full).max() > 9  # The coupling makes H's top eigenvalue larger.

  def loss(params, batch):
    x = jnp.concatenate([params['a'], params['b']])
    return 0.5 * batch['scale'] * x @ jnp.asarray(full) @ x

  params = {'a': jnp.ones(2), 'b': jnp.ones(2)}
  blocks = {'a': {'a': True, 'b': False}, 'b': {'a': False, 'b': True}}
  batches = [{'scale': jnp.float32(1.0)}, {'scale': jnp.float32(3.0)}]
  found = hessian.block_eigenvalues(loss, params, batches, blocks, iterations=100, tol=1e-7)
  np.testing.assert_allclose(found['a'], [6.0, 18.0], rtol=1e-3)
  np.testing.assert_allclose(found['b'], [2.0, 6.0], rtol=1e-3)
  assert hessian.sensitivity(found['a']) == pytest.approx(12.0 + 6.0, rel=1e-3)  # |mean| + std


def test_sensitivity_is_abs_mean_plus_std():
  assert hessian.sensitivity([1.0, 3.0]) == pytest.approx(3.0)
  assert hessian.sensitivity([-4.0, -4.0]) == pytest.approx(4.0)
