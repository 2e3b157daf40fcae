"""The contraction of every `Projection`: x . kernel, with a weight gradient that XLA's CPU
backend multiplies without copying a wide operand.

    y[..., out...] = sum over in... of x[..., in...] kernel[in..., out...]

The gradients are autodiff's: dx = dy . kernel^T and dkernel = x^T . dy summed over the
batch axes. XLA's CPU backend computes that weight gradient by copying one of x and dy
transposed and then multiplying; for the form autodiff emits it copies dy, which in an
MLP's input projection is four times wider than x ([tokens, mlp] against [tokens,
embed]). Here the gradient is written so that the copied operand is the narrower one
(dkernel^T = dy^T . x, transposed back, when dy is the narrower): MiniLM's [4096, 384] x
[384, 1536] projection alone took 140 ms for its forward and backward and now 82 ms
(PyTorch 74), the whole fine-tuning step 4% less (README, bench.finetune_vs_torch; the
2-core CPU, December 2026). On GPUs and TPUs the layouts are the compiler's affair.

A custom VJP has no forward-mode rule, so `jax.jvp` (and `jax.hessian`, `jax.jacfwd`)
cannot see through a model: Hessian-vector products are taken reverse-over-reverse
(training/hessian.py).
"""

import functools
import math

import jax
import jax.numpy as jnp


def product(x: jax.Array, kernel: jax.Array, fan_in: int) -> jax.Array:
  """The same product with autodiff's own gradients: for code that never differentiates
  (initialization; tracing the custom VJP costs about a fifth of an abstract init)."""
  axes = (tuple(range(x.ndim - fan_in, x.ndim)), tuple(range(fan_in)))
  return jax.lax.dot_general(x, kernel, (axes, ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def contract(x: jax.Array, kernel: jax.Array, fan_in: int) -> jax.Array:
  """x [batch..., in...] . kernel [in..., out...] -> [batch..., out...] over the last
  `fan_in` axes of x (len(in...) = fan_in)."""
  return product(x, kernel, fan_in)


def _contract_fwd(x, kernel, fan_in):
  return product(x, kernel, fan_in), (x, kernel)


def _contract_bwd(fan_in, residuals, dy):
  x, kernel = residuals
  fan_out = kernel.ndim - fan_in
  batch = tuple(range(x.ndim - fan_in))  # The axes the weight gradient sums over.
  outs = tuple(range(dy.ndim - fan_out, dy.ndim))
  dx = jax.lax.dot_general(dy, kernel, ((outs, tuple(range(fan_in, kernel.ndim))), ((), ())))
  if math.prod(x.shape[len(batch) :]) <= math.prod(dy.shape[len(batch) :]):
    dkernel = jax.lax.dot_general(x, dy, ((batch, batch), ((), ())))  # [in..., out...]
  else:
    dkernel_t = jax.lax.dot_general(dy, x, ((batch, batch), ((), ())))  # [out..., in...]
    dkernel = jnp.transpose(dkernel_t, (*range(fan_out, kernel.ndim), *range(fan_out)))
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


contract.defvjp(_contract_fwd, _contract_bwd)
