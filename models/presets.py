"""Size tables: preset name -> TransformerConfig fields.

Families differ only in these fields. `python -m models.presets` prints every
preset with its parameter count, computed with `jax.eval_shape` (no memory).
"""

import jax
import jax.numpy as jnp

from models.transformer import TransformerConfig

_BERT = dict(
  vocab_size=30522,
  max_len=512,
  type_vocab_size=2,
  causal=False,
  pre_norm=False,
  embed_norm=True,
  final_norm=False,
  activation='gelu',
  layer_norm_eps=1e-12,
)
_GPT2 = dict(
  vocab_size=50257,
  max_len=1024,
  type_vocab_size=0,
  causal=True,
  pre_norm=True,
  embed_norm=False,
  final_norm=True,
  activation='gelu_tanh',
  layer_norm_eps=1e-5,
)

PRESETS: dict[str, dict] = {
  # Turc et al. 2019 "Well-Read Students Learn Better", BERT-Tiny: L=2, H=128.
  'bert-tiny': dict(_BERT, num_layers=2, d_model=128, num_heads=2, mlp_dim=512),
  # Devlin et al. 2019, BERT-base: L=12, H=768, A=12, 110M.
  'bert-base': dict(_BERT, num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
  # A GPT-2-shaped model small enough for tests and CPU runs.
  'gpt2-tiny': dict(_GPT2, num_layers=2, d_model=128, num_heads=2, mlp_dim=512, max_len=512),
  # Radford et al. 2019, the 124M (paper: "117M") GPT-2.
  'gpt2-small': dict(_GPT2, num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
}


def get_config(name: str, **overrides) -> TransformerConfig:
  """The TransformerConfig of preset `name`, with `overrides` replacing fields."""
  if name not in PRESETS:
    raise ValueError(f'Unknown model preset {name!r}; known presets: {", ".join(PRESETS)}.')
  return TransformerConfig(**{**PRESETS[name], **overrides})


def model_class(cfg: TransformerConfig):
  from models import heads

  return heads.CausalLM if cfg.causal else heads.MaskedLM


def count_params(cfg: TransformerConfig) -> int:
  """Parameters of the preset's pretraining model (tied embeddings counted once)."""
  model = model_class(cfg)(cfg)
  tokens = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens + 1))
  return sum(x.size for x in jax.tree.leaves(shapes))


def main():
  print(f'{"preset":<14} {"layers":>6} {"d_model":>7} {"heads":>5} {"params":>14}')
  for name in PRESETS:
    cfg = get_config(name)
    n = count_params(cfg)
    print(f'{name:<14} {cfg.num_layers:>6} {cfg.d_model:>7} {cfg.num_heads:>5} {n:>14,}')


if __name__ == '__main__':
  main()
