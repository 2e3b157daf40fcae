"""bench/gemm_floor.py: a function's products read from its jaxpr (counted through
gradients, custom VJPs, scans and conds), their einsum forms, and their floor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bench import gemm_floor
from models import matmul

MATMUL = (((1,), (0,)), ((), ()))

DIMENSION_NUMBERS = [
  ((4, 3), (3, 5), MATMUL),  # x @ w
  ((4, 3), (5, 3), (((1,), (1,)), ((), ()))),  # x @ w.T
  ((3, 4), (3, 5), (((0,), (0,)), ((), ()))),  # x.T @ dy: a weight gradient
  ((2, 6, 3, 4), (2, 3, 5, 4), (((3,), (3,)), ((0, 2), (0, 1)))),  # q.k per head
  ((2, 6, 3, 4), (3, 4, 5), (((2, 3), (0, 1)), ((), ()))),  # two contracted axes
]


@pytest.mark.parametrize('lhs_shape, rhs_shape, dims', DIMENSION_NUMBERS)
def test_the_einsum_form_computes_the_same_product(lhs_shape, rhs_shape, dims):
  rng = np.random.default_rng(0)
  lhs = rng.standard_normal(lhs_shape, dtype=np.float32)
  rhs = rng.standard_normal(rhs_shape, dtype=np.float32)
  product = gemm_floor.Product(lhs_shape, rhs_shape, dims, 'float32')
  expected = np.asarray(lax.dot_general(lhs, rhs, dims, precision=lax.Precision.HIGHEST))
  np.testing.assert_allclose(np.einsum(product.einsum(), lhs, rhs), expected, rtol=1e-5)
  # FLOPs: one multiply and one add per term of the product's sums.
  contracted = np.prod([lhs_shape[i] for i in dims[0][0]])
  assert product.flops == 2 * expected.size * contracted


def test_products_are_counted_through_a_gradient_a_scan_and_a_cond():
  def layer(w, x):  # [4, 3] @ [3, 3] through the project's custom-VJP product.
    return jnp.tanh(matmul.contract(x, w, 1))

  def loss(w, x, flag):
    def body(h, _):
      return layer(w, h), None

    h, _ = lax.scan(body, x, None, length=3)  # 3 products forward.
    # One branch multiplies twice, the other not at all: the heavier one counts.
    h = lax.cond(flag, lambda h: h @ w @ w, lambda h: h, jnp.concatenate([h, h]))
    return jnp.sum(h)

  x, w = jnp.ones((4, 3)), jnp.ones((3, 3))
  forward = gemm_floor.step_products(loss, w, x, True)
  assert sum(forward.values()) == 3 + 2
  products = gemm_floor.step_products(jax.grad(loss), w, x, True)
  # Backward: each product's input and weight gradients (the scan's first input x is not
  # differentiated, but its carry is), so 3 x 3 through the scan and 2 x 3 in the cond.
  assert sum(products.values()) == 3 * 3 + 2 * 3
  # The scan's weight gradients: x^T . dy over the 4 rows ([8, 3] operands in the cond).
  weight_gradient = gemm_floor.Product((4, 3), (4, 3), (((0,), (0,)), ((), ())), 'float32')
  assert products[weight_gradient] == 3


def test_a_while_loop_has_no_floor():
  def loop(w):
    return lax.while_loop(lambda h: h.sum() < 10.0, lambda h: h @ w, jnp.ones((2, 2)))

  with pytest.raises(ValueError, match='while loop'):
    gemm_floor.step_products(loop, jnp.eye(2))


def test_floor_times_both_sides_and_weights_the_sums_by_count():
  pytest.importorskip('torch', reason='needs requirements-parity.txt')
  products = {
    gemm_floor.Product((64, 32), (32, 16), MATMUL, 'float32'): 3,
    gemm_floor.Product((2, 8, 4), (2, 4, 8), (((2,), (1,)), ((0,), (0,))), 'float32'): 1,
  }
  result = gemm_floor.floor(products, repeats=2, passes=2)
  assert result['totals']['products'] == 4
  assert result['totals']['gflop'] == pytest.approx(
    (3 * 2 * 64 * 32 * 16 + 2 * 2 * 8 * 4 * 8) / 1e9
  )
  for side in ('xla_ms', 'torch_ms'):
    rows = result['rows']
    assert all(r[side] > 0 for r in rows)
    assert result['totals'][side] == pytest.approx(sum(r['count'] * r[side] for r in rows))
  table = gemm_floor.table(result)
  assert '| ab,bc->ac | [64, 32] | [32, 16] | 3 |' in table
  assert '| abc,acd->abd |' in table and 'all 4 products' in table
