"""Curvature of a loss: Hessian-vector products and each layer's top Hessian eigenvalue.

Q-BERT (Shen et al. 2020) ranks layers by how sharply the loss curves around their
weights: the top eigenvalue of the layer's block of the Hessian, found by power iteration
on Hessian-vector products, over a few batches; a layer whose eigenvalue is large is
kept at more bits (models/quantization.assign_bits). Its sensitivity is |mean| + std of
the eigenvalues over the batches.

Hessian-vector products are reverse-over-reverse, the gradient of <grad loss, v>: a
forward and a backward pass of the model, then the backward pass of that, never the
Hessian itself (forward-over-reverse, `jax.jvp` of `jax.grad`, would be cheaper in memory,
but the models' projections have a custom VJP, models/matmul.py, which forward mode
cannot differentiate). A layer's block H_ll v_l is the layer's part of H v for a v that
is zero outside the layer, so one compiled product serves every layer (its block is a
mask). Pure functions of a loss closure
`loss(params, batch) -> scalar`, with no model or data of their own.
"""

import jax
import jax.numpy as jnp
import numpy as np


def hvp(loss, params, vector):
  """H v: the Hessian of `loss` at `params` times `vector` (a tree like `params`)."""
  return jax.grad(lambda p: _dot(jax.grad(loss)(p), vector))(params)


def _dot(a, b) -> jax.Array:
  leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
  return sum(leaves, jnp.zeros((), jnp.float32))


def _masked(tree, mask):
  return jax.tree.map(lambda x, keep: x if keep else jnp.zeros_like(x), tree, mask)


def power_iteration(matvec, v0, iterations: int, tol: float = 1e-4) -> tuple[float, int]:
  """The eigenvalue of largest magnitude of a symmetric operator, and the products used.

  Args:
    matvec: v -> A v on trees.
    v0: the start vector (random: almost surely not orthogonal to the top eigenvector).
    iterations: most products to run.
    tol: stop once the Rayleigh quotient moves by less than tol x its magnitude.

  Returns:
    (v'Av of the last unit vector v, products run).
  """
  v = jax.tree.map(lambda x: x / jnp.sqrt(_dot(v0, v0)), v0)
  eigenvalue = None
  for i in range(1, iterations + 1):
    av = matvec(v)
    estimate = float(_dot(v, av))
    norm = float(jnp.sqrt(_dot(av, av)))
    if norm == 0.0:
      return 0.0, i
    v = jax.tree.map(lambda x, norm=norm: x / norm, av)
    if eigenvalue is not None and abs(estimate - eigenvalue) <= tol * abs(estimate):
      return estimate, i
    eigenvalue = estimate
  return eigenvalue, iterations


def block_eigenvalues(
  loss,
  params,
  batches,
  blocks: dict,
  *,
  iterations: int,
  tol: float = 1e-4,
  seed: int = 0,
) -> dict[str, list[float]]:
  """Top eigenvalue of each block of the Hessian of `loss`, on each batch.

  Args:
    loss: (params, batch) -> scalar (deterministic: no dropout).
    params: the point the Hessian is taken at.
    batches: a list of batches.
    blocks: {name: tree of bools like `params`}: the leaves of each block (a layer).
    iterations: power iterations per block and batch.
    tol: relative change of the estimate that ends the iteration early.
    seed: of the random start vectors.

  Returns:
    {name: [eigenvalue on each batch]}.
  """
  product = jax.jit(lambda p, batch, v: hvp(lambda q: loss(q, batch), p, v))
  key = jax.random.key(seed)
  result = {name: [] for name in blocks}
  for b, batch in enumerate(batches):
    for n, (name, mask) in enumerate(sorted(blocks.items())):
      leaves, tree = jax.tree.flatten(params)
      keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, b), n), len(leaves))
      start = [
        jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(list(keys), leaves, strict=True)
      ]
      start = _masked(jax.tree.unflatten(tree, start), mask)

      def matvec(v, batch=batch, mask=mask):
        return _masked(product(params, batch, v), mask)

      eigenvalue, _ = power_iteration(matvec, start, iterations, tol)
      result[name].append(eigenvalue)
  return result


def sensitivity(eigenvalues: list[float]) -> float:
  """Q-BERT's sensitivity of a layer: |mean| + std of its top eigenvalues over batches."""
  values = np.asarray(eigenvalues, np.float64)
  return float(abs(values.mean()) + values.std())
