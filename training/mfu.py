"""Peak FLOP/s of a device, the denominator of MFU (models/flops.py counts the numerator).

MFU = model FLOPs per token x tokens per second / (peak FLOP/s per device x devices),
printed in the training log (training/trainer.py).
"""

import time

import jax
import jax.numpy as jnp


def measured_peak_flops(device=None, size: int = 1024, repeats: int = 5) -> float:
  """Best-of-`repeats` FLOP/s of a square float32 matmul on one device.

  Used when no peak is configured (CPUs publish none); on accelerators set
  `peak_flops_per_device` to the datasheet figure instead.
  """
  device = device or jax.local_devices()[0]
  a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best
