"""Size tables: preset name -> TransformerConfig fields, for every family on the stack.

Families differ only in these fields. `python -m models.presets` prints every
preset with its parameter count, computed with `jax.eval_shape` (no memory, so
GPT-3 175B costs nothing). Counts follow the released checkpoints: the
`Backbone` (embeddings counted once even when tied to the output, learned
positions included, BERT-family encoders with their pooler, ELECTRA and
DistilBERT without pooler or head); pretraining heads are not counted. An
encoder-decoder counts its whole `Seq2SeqLM`: one shared embedding, both stacks,
and the output projection only when it is untied (T5 v1.1).
"""

import importlib

import jax
import jax.numpy as jnp

from models import heads
from models.transformer import TransformerConfig

# Post-LN encoder with token types and an embedding LayerNorm (Devlin et al. 2019).
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
  pooler=True,
)
# RoBERTa (Liu et al. 2019): BERT's stack, BPE vocab, positions offset by padding_idx + 1.
_ROBERTA = dict(
  _BERT, vocab_size=50265, max_len=514, position_offset=2, type_vocab_size=1, layer_norm_eps=1e-5
)
# ALBERT (Lan et al. 2020): factorized embeddings E=128 and one block shared by all layers.
_ALBERT = dict(_BERT, vocab_size=30000, embed_dim=128, share_layers=True, activation='gelu_tanh')
# ELECTRA (Clark et al. 2020): BERT's stack without pooler; discriminators and generators.
_ELECTRA = dict(_BERT, pooler=False)
# MobileBERT (Sun et al. 2020, google/mobilebert-uncased): BERT-large's 24 layers at 512
# wide, each block narrowed to 128 (queries and keys from a shared bottleneck of the block
# input, values from the 512-wide input itself, 4 heads of 32), four stacked ReLU FFNs of
# 512, NoNorm everywhere, and 128-wide token embeddings read as trigrams, projected to 512.
_MOBILEBERT = dict(
  _BERT,
  num_layers=24,
  d_model=512,
  num_heads=4,
  mlp_dim=512,
  embed_dim=128,
  embed_trigram=True,
  bottleneck_dim=128,
  shared_qk_bottleneck=True,
  num_mlps=4,
  norm='affine',
  activation='relu',
  dropout_rate=0.0,
)
# Pre-LN decoder with a final LayerNorm and tanh GELU (Radford et al. 2019).
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


# T5 (Raffel et al. 2020): pre-norm encoder-decoder, scale-only RMS norm, no biases,
# relative position buckets shared by the layers of a stack, one shared embedding,
# ReLU MLP; the tied output is rescaled by d_model**-0.5.
_T5 = dict(
  vocab_size=32128,
  type_vocab_size=0,
  position='relative',
  pre_norm=True,
  embed_norm=False,
  final_norm=True,
  norm='rms',
  use_bias=False,
  scale_attention=False,
  activation='relu',
  layer_norm_eps=1e-6,
  attention_dropout_rate=0.1,
  activation_dropout_rate=0.1,  # T5's one dropout rate also drops the MLP's hidden units.
  scale_tied_output=True,
  fan_in_init=True,
  pooler=False,
)
# T5 v1.1: gated-GELU MLP and an untied output (no rescaling).
_T5_V1_1 = dict(
  _T5, activation='gelu_tanh', gated_mlp=True, tie_embeddings=False, scale_tied_output=False
)
# BART (Lewis et al. 2020): post-LN encoder-decoder with learned positions offset by 2
# and a LayerNorm on each stack's embeddings; the output is tied to the shared table.
_BART = dict(
  vocab_size=50265,
  max_len=1026,
  position_offset=2,
  type_vocab_size=0,
  pre_norm=False,
  embed_norm=True,
  final_norm=False,
  activation='gelu',
  layer_norm_eps=1e-5,
  attention_dropout_rate=0.0,
  pooler=False,
)


def _t5(layers: int, d_model: int, heads: int, mlp_dim: int, head_dim: int = 64, v1_1=False):
  base = _T5_V1_1 if v1_1 else _T5
  return dict(
    base,
    num_layers=layers,
    num_decoder_layers=layers,
    d_model=d_model,
    num_heads=heads,
    head_dim=head_dim,
    mlp_dim=mlp_dim,
  )


def _bart(layers: int, d_model: int, heads: int) -> dict:
  return dict(
    _BART,
    num_layers=layers,
    num_decoder_layers=layers,
    d_model=d_model,
    num_heads=heads,
    mlp_dim=4 * d_model,
  )


def _gpt3(layers: int, d_model: int, heads: int, head_dim: int) -> dict:
  """A row of Brown et al. 2020, Table 2.1: GPT-2's stack, 2048 context, dense attention."""
  return dict(
    _GPT2,
    num_layers=layers,
    d_model=d_model,
    num_heads=heads,
    head_dim=head_dim,
    mlp_dim=4 * d_model,
    max_len=2048,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
  )


def _bert(layers: int, d_model: int, heads: int, **kw) -> dict:
  return dict(_BERT, num_layers=layers, d_model=d_model, num_heads=heads, mlp_dim=4 * d_model, **kw)


PRESETS: dict[str, dict] = {
  # Turc et al. 2019 "Well-Read Students Learn Better", BERT-Tiny: L=2, H=128.
  'bert-tiny': _bert(2, 128, 2),
  'bert-base': _bert(12, 768, 12),  # Devlin et al. 2019: 110M.
  'bert-large': _bert(24, 1024, 16),  # 340M in the paper.
  'roberta-base': dict(_bert(12, 768, 12), **_ROBERTA),  # Liu et al. 2019: 125M.
  'roberta-large': dict(_bert(24, 1024, 16), **_ROBERTA),  # 355M.
  'albert-base': dict(_bert(12, 768, 12), **_ALBERT),  # Lan et al. 2020, Table 1: 12M.
  'albert-large': dict(_bert(24, 1024, 16), **_ALBERT),  # 18M.
  'albert-xlarge': dict(_bert(24, 2048, 16), **_ALBERT),  # 60M.
  # 235M in the paper's Table 1; the released v1/v2 checkpoints have 222.6M
  # (12 layers, 64 heads, FFN 16384).
  'albert-xxlarge': dict(_bert(12, 4096, 64), **_ALBERT),
  'electra-small': dict(_bert(12, 256, 4), **dict(_ELECTRA, embed_dim=128)),  # 14M.
  'electra-base': dict(_bert(12, 768, 12), **_ELECTRA),  # 110M.
  'electra-large': dict(_bert(24, 1024, 16), **_ELECTRA),  # 335M.
  # Generators: the paper's Table 7 widths (hidden, FFN and heads x 1/4, 1/3, 1/4 of
  # the discriminator); embeddings are E = the discriminator's width, shared with it.
  'electra-small-generator': dict(_bert(12, 64, 1), **dict(_ELECTRA, embed_dim=128)),
  'electra-base-generator': dict(_bert(12, 256, 4), **dict(_ELECTRA, embed_dim=768)),
  'electra-large-generator': dict(_bert(24, 256, 4), **dict(_ELECTRA, embed_dim=1024)),
  # Sanh et al. 2019: 6 of BERT-base's layers, no token types, no pooler: 66M.
  'distilbert': _bert(6, 768, 12, **dict(type_vocab_size=0, pooler=False)),
  # Sun et al. 2020; the paper's Table 1 says 25.3M.
  'mobilebert': _MOBILEBERT,
  # MobileBERT's block at 2 layers and a quarter of its widths, for tests and CPU runs
  # (not the paper's MobileBERT-TINY, which is 24 layers deep).
  'mobilebert-tiny': dict(
    _MOBILEBERT, num_layers=2, d_model=128, mlp_dim=128, embed_dim=32, bottleneck_dim=32
  ),
  # Jiao et al. 2020, TinyBERT-4: 4 layers, 312 wide, FFN 1200 (14.5M).
  'tinybert-4': dict(_bert(4, 312, 12), mlp_dim=1200),
  # Joshi et al. 2020 and Sun et al. 2019: BERT-shaped (their objectives differ).
  # SpanBERT's released models are cased (vocab 28996).
  'spanbert-base': _bert(12, 768, 12, **dict(vocab_size=28996)),
  'spanbert-large': _bert(24, 1024, 16, **dict(vocab_size=28996)),
  # Xu et al. 2020, LayoutLM: BERT with 2-D position tables (1024 rows) for word boxes.
  'layoutlm-base': _bert(12, 768, 12, **dict(max_2d_positions=1024)),  # 113M.
  'layoutlm-tiny': _bert(2, 128, 2, **dict(max_2d_positions=1024)),  # Tests and CPU runs.
  # ERNIE 1.0 (Chinese): 18000 characters/words, 513 positions, ReLU.
  'ernie-1.0': _bert(12, 768, 12, **dict(vocab_size=18000, max_len=513, activation='relu')),
  # Radford et al. 2018, GPT-1: post-LN decoder, 512 positions, BPE 40478 (117M).
  'gpt1': dict(
    _GPT2,
    num_layers=12,
    d_model=768,
    num_heads=12,
    mlp_dim=3072,
    vocab_size=40478,
    max_len=512,
    pre_norm=False,
    final_norm=False,
    activation='gelu_tanh',  # The original code's tanh approximation.
  ),
  # A GPT-2-shaped model small enough for tests and CPU runs.
  'gpt2-tiny': dict(_GPT2, num_layers=2, d_model=128, num_heads=2, mlp_dim=512, max_len=512),
  # Radford et al. 2019; the paper rounds to 117M / 345M / 762M / 1542M.
  'gpt2-small': dict(_GPT2, num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
  'gpt2-medium': dict(_GPT2, num_layers=24, d_model=1024, num_heads=16, mlp_dim=4096),
  'gpt2-large': dict(_GPT2, num_layers=36, d_model=1280, num_heads=20, mlp_dim=5120),
  'gpt2-xl': dict(_GPT2, num_layers=48, d_model=1600, num_heads=25, mlp_dim=6400),
  # Brown et al. 2020, Table 2.1 (n_layers, d_model, n_heads, d_head).
  'gpt3-small': _gpt3(12, 768, 12, 64),  # 125M
  'gpt3-medium': _gpt3(24, 1024, 16, 64),  # 350M
  'gpt3-large': _gpt3(24, 1536, 16, 96),  # 760M
  # 1.3B in the table, whose n_heads x d_head = 3072 != d_model; counted as printed: 1.52B.
  'gpt3-xl': _gpt3(24, 2048, 24, 128),
  'gpt3-2.7b': _gpt3(32, 2560, 32, 80),  # 2.7B
  'gpt3-6.7b': _gpt3(32, 4096, 32, 128),  # 6.7B
  'gpt3-13b': _gpt3(40, 5140, 40, 128),  # 13B (d_model 5140 as printed; heads x d_head = 5120)
  'gpt3-175b': _gpt3(96, 12288, 96, 128),  # 175B
  # Raffel et al. 2020, Table 14 (v1.0); the paper rounds to 60M, 220M, 770M, 2.8B, 11B.
  't5-small': _t5(6, 512, 8, 2048),
  't5-base': _t5(12, 768, 12, 3072),
  't5-large': _t5(24, 1024, 16, 4096),
  't5-3b': _t5(24, 1024, 32, 16384, head_dim=128),
  't5-11b': _t5(24, 1024, 128, 65536, head_dim=128),
  # T5 v1.1 (google/t5-v1_1-*): gated-GELU, untied output counted, no dropout in pretraining.
  't5-v1_1-small': _t5(8, 512, 6, 1024, v1_1=True),
  't5-v1_1-base': _t5(12, 768, 12, 2048, v1_1=True),
  't5-v1_1-large': _t5(24, 1024, 16, 2816, v1_1=True),
  't5-v1_1-xl': _t5(24, 2048, 32, 5120, v1_1=True),
  't5-v1_1-xxl': _t5(24, 4096, 64, 10240, v1_1=True),
  # Lewis et al. 2020: 6+6 and 12+12 layers (the paper says 140M and 400M).
  'bart-base': _bart(6, 768, 12),
  'bart-large': _bart(12, 1024, 16),
  # Song et al. 2019, MASS: 6+6 layers, 1024 wide, FFN 4096, 8 heads, post-LN with learned
  # positions as in XLM. The vocabulary is the tokenizer's (the released en-fr BPE has
  # about 60k); the count is not a published figure.
  'mass-base': dict(_bart(6, 1024, 8), max_len=512, position_offset=0, attention_dropout_rate=0.1),
}


# Families outside the Transformer (ELMo, word2vec) live in their own model file,
# which defines `CONFIG` (its frozen config dataclass) and `PRESETS` (name -> fields).
# Such a config has vocab_size, dtype, param_dtype, num_layers and d_model fields,
# and the methods count_params() and train_flops_per_token(seq_len).
_OTHER_FAMILIES: tuple[str, ...] = ('models.elmo', 'models.word2vec', 'models.xlnet')


def _other_presets() -> dict[str, tuple[type, dict]]:
  found = {}
  for path in _OTHER_FAMILIES:
    module = importlib.import_module(path)
    found.update({name: (module.CONFIG, fields) for name, fields in module.PRESETS.items()})
  return found


def names() -> list[str]:
  """Every preset name, Transformer families first."""
  return [*PRESETS, *_other_presets()]


def config_class(name: str) -> type:
  """The config dataclass of preset `name` (TransformerConfig for the one stack)."""
  if name in PRESETS:
    return TransformerConfig
  other = _other_presets()
  if name not in other:
    raise ValueError(f'Unknown model preset {name!r}; known presets: {", ".join(names())}.')
  return other[name][0]


def get_config(name: str, **overrides):
  """The config of preset `name`, with `overrides` replacing fields."""
  cls = config_class(name)
  fields = PRESETS[name] if cls is TransformerConfig else _other_presets()[name][1]
  return cls(**{**fields, **overrides})


def count_params(cfg) -> int:
  """Parameters of the model as released (see the module docstring), via jax.eval_shape."""
  if not isinstance(cfg, TransformerConfig):
    return cfg.count_params()
  tokens = jnp.zeros((1, 8), jnp.int32)
  if cfg.num_decoder_layers:
    model = heads.Seq2SeqLM(cfg)
    args = (tokens, tokens + 1, tokens) * 2
  else:
    model, args = heads.Backbone(cfg), (tokens, tokens + 1)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
  return sum(x.size for x in jax.tree.leaves(shapes))


def main():
  header = f'{"preset":<24} {"layers":>6} {"d_model":>7} {"heads":>5} {"params":>17}'
  print(header)
  for name in names():
    cfg = get_config(name)
    n = count_params(cfg)
    heads = getattr(cfg, 'num_heads', '-')
    print(f'{name:<24} {cfg.num_layers:>6} {cfg.d_model:>7} {heads:>5} {n:>17,}')


if __name__ == '__main__':
  main()
