"""models/matmul.py: the projections' contraction and its hand-written gradients, against
autodiff of the plain product (matmul.product)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import matmul
from training import hessian

# (x shape, kernel shape, fan_in): the weight gradient's two forms (x narrower than dy,
# and dy narrower), several input axes (the attention output's [heads, kv]) and several
# output axes (the query's [heads, kv]).
CASES = {
  'narrow_input': ((2, 3, 4), (4, 6), 1),
  'narrow_output': ((2, 3, 6), (6, 4), 1),
  'square': ((5, 4), (4, 4), 1),
  'heads_in': ((2, 3, 2, 4), (2, 4, 5), 2),
  'heads_out': ((2, 3, 8), (8, 2, 3), 1),
}


def _inputs(x_shape, k_shape, dtype=jnp.float32):
  rng = np.random.default_rng(0)
  x, kernel = (jnp.asarray(rng.normal(size=s), dtype) for s in (x_shape, k_shape))
  return x, kernel


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['f32', 'bf16'])
@pytest.mark.parametrize('case', list(CASES))
def test_values_and_gradients_are_autodiffs(case, dtype):
  x_shape, k_shape, fan_in = CASES[case]
  x, kernel = _inputs(x_shape, k_shape, dtype)
  out_shape = x_shape[: len(x_shape) - fan_in] + k_shape[fan_in:]
  weights = jnp.asarray(np.random.default_rng(1).normal(size=out_shape), jnp.float32)

  def loss(fn):
    return lambda x, k: jnp.sum(jnp.tanh(fn(x, k, fan_in).astype(jnp.float32)) * weights)

  got = jax.jit(jax.value_and_grad(loss(matmul.contract), argnums=(0, 1)))(x, kernel)
  want = jax.jit(jax.value_and_grad(loss(matmul.product), argnums=(0, 1)))(x, kernel)
  # The forward is the same product; matmul.product has autodiff's own gradients.
  np.testing.assert_array_equal(
    matmul.contract(x, kernel, fan_in), matmul.product(x, kernel, fan_in)
  )
  atol = 1e-5 if dtype == jnp.float32 else 5e-2  # bf16: a few ulps of sums of order 1.
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6 if dtype == jnp.float32 else 1e-2)
  for g, w in zip(got[1], want[1], strict=True):
    assert g.dtype == w.dtype == dtype and g.shape == w.shape
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=atol)


def test_hessian_vector_products_see_through_it():
  """training/hessian.py's products (reverse-over-reverse) through the custom VJP equal
  the explicit Hessian of the plain product (forward mode, which the VJP does not have)."""
  x, kernel = _inputs((3, 4), (4, 2))
  targets = jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)), jnp.float32)

  def loss_of(fn):
    return lambda k: jnp.sum((jnp.tanh(fn(x, k, 1)) - targets) ** 2)

  vector = jnp.asarray(np.random.default_rng(3).normal(size=kernel.shape), jnp.float32)
  product = hessian.hvp(loss_of(matmul.contract), kernel, vector)
  explicit = jax.hessian(loss_of(matmul.product))(kernel).reshape(kernel.size, kernel.size)
  np.testing.assert_allclose(
    product.reshape(-1), explicit @ vector.reshape(-1), rtol=1e-4, atol=1e-5
  )
  with pytest.raises(TypeError, match='forward-mode'):  # Why hessian.py is reverse-over-reverse.
    jax.jvp(loss_of(matmul.contract), (kernel,), (vector,))
