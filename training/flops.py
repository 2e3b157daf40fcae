"""FLOPs per token and peak FLOP/s, for MFU (the PaLM / MaxText convention).

Training FLOPs per token = 6 x (matmul parameters outside the input embedding
lookup, the output projection onto the vocabulary included) + attention:
12 x layers x seq_len x (heads x head_dim). Causal attention is NOT halved:
our attention computes the full score matrix and masks it, so the full count
is the work done. Embedding lookups, norms and softmaxes are not counted.
An encoder-decoder is counted per encoder token with a decoder row as long as
the encoder's (as in BART denoising): the decoder adds cross-attention
projections and scores.
"""

import time

import jax
import jax.numpy as jnp

from models import heads
from models.transformer import TransformerConfig


def matmul_params(cfg: TransformerConfig, mlm_head: bool) -> int:
  """Parameters that take part in a matmul for every token."""
  attn = cfg.num_heads * cfg.kv_dim
  mlp = (3 if cfg.gated_mlp else 2) * cfg.d_model * cfg.mlp_dim
  encoder = cfg.num_layers * (4 * cfg.d_model * attn + mlp)
  decoder = cfg.num_decoder_layers * (8 * cfg.d_model * attn + mlp)
  head = cfg.d_model * cfg.vocab_size + (cfg.d_model * cfg.d_model if mlm_head else 0)
  return encoder + decoder + head


def train_flops_per_token(cfg, seq_len: int, mlm_head: bool) -> float:
  """Forward + backward FLOPs per token.

  Families outside the Transformer (ELMo, word2vec) count their own FLOPs.
  """
  if not isinstance(cfg, TransformerConfig):
    return cfg.train_flops_per_token(seq_len)
  score_layers = cfg.num_layers + 2 * cfg.num_decoder_layers  # Decoder: self and cross.
  attention = 12 * score_layers * seq_len * cfg.num_heads * cfg.kv_dim
  return 6 * matmul_params(cfg, mlm_head) + attention


def model_flops_per_token(model, cfg, seq_len: int) -> float:
  """Training FLOPs per token of `model`: its own `train_flops_per_token(seq_len)`
  when it is more than one stack with a head (ELECTRA's generator and
  discriminator), else the stack's count with an MLM transform for MaskedLM."""
  if hasattr(model, 'train_flops_per_token'):
    return model.train_flops_per_token(seq_len)
  return train_flops_per_token(cfg, seq_len, mlm_head=isinstance(model, heads.MaskedLM))


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
