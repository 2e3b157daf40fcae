"""FLOPs per token and peak FLOP/s, for MFU (the PaLM / MaxText convention).

Training FLOPs per token = 6 x (matmul parameters outside the input embedding
lookup, the output projection onto the vocabulary included) + attention:
12 x layers x seq_len x (heads x head_dim). Causal attention is NOT halved:
our attention computes the full score matrix and masks it, so the full count
is the work done. Embedding lookups, norms and softmaxes are not counted.
"""

import time

import jax
import jax.numpy as jnp

from models.transformer import TransformerConfig


def matmul_params(cfg: TransformerConfig, mlm_head: bool) -> int:
  """Parameters that take part in a matmul for every token."""
  attn = cfg.num_heads * cfg.kv_dim
  per_layer = 4 * cfg.d_model * attn + 2 * cfg.d_model * cfg.mlp_dim
  head = cfg.d_model * cfg.vocab_size + (cfg.d_model * cfg.d_model if mlm_head else 0)
  return cfg.num_layers * per_layer + head


def train_flops_per_token(cfg: TransformerConfig, seq_len: int, mlm_head: bool) -> float:
  """Forward + backward FLOPs per token."""
  attention = 12 * cfg.num_layers * seq_len * cfg.num_heads * cfg.kv_dim
  return 6 * matmul_params(cfg, mlm_head) + attention


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
