"""What every model config shares (the Transformer's, ELMo's, word2vec's): dtypes by name
and `replace`."""

import dataclasses

import jax.numpy as jnp

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


class ModelConfig:
  """Mixin of a frozen config dataclass with `dtype` and `param_dtype` fields."""

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def storage_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes):
    """A copy with `changes` applied to its fields."""
    return dataclasses.replace(self, **changes)
