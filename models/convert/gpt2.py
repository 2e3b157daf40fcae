"""GPT-2 and GPT-1: Hugging Face names <-> our causal stack (`heads.CausalLM`, 'decoder').

GPT-1 (`openai-gpt`) has GPT-2's layer names and layouts but is post-LN, with no
final LayerNorm and its own embedding names; its `afn` names the activation
differently ('gelu' is the tanh approximation there, as in the original code).

GPT-2 stores its projections as `Conv1D` weights, already [in, out] like our
kernels; query, key and value are one fused `c_attn` tensor [embed, 3 * embed].
Our stack has one dropout rate for embeddings and residuals: `resid_pdrop`
(`embd_pdrop` differs in no released checkpoint; a warning says when it does).
"""

import warnings

from models import heads
from models.convert import mapping
from models.convert.mapping import (
  CONV1D_FROM_HEADS,
  COPY,
  FUSED_QKV,
  FUSED_QKV_BIAS,
  LINEAR,
  Family,
  Head,
  Rule,
  Tied,
  dense,
  norm,
)
from models.transformer import TransformerConfig

_DEFAULTS = dict(
  vocab_size=50257,
  n_positions=1024,
  n_embd=768,
  n_layer=12,
  n_head=12,
  n_inner=None,
  activation_function='gelu_new',
  resid_pdrop=0.1,
  embd_pdrop=0.1,
  attn_pdrop=0.1,
  layer_norm_epsilon=1e-5,
  initializer_range=0.02,
  scale_attn_weights=True,
  scale_attn_by_inverse_layer_idx=False,
  add_cross_attention=False,
  tie_word_embeddings=True,
)


def config_from_hf(hf: dict) -> TransformerConfig:
  c = {**_DEFAULTS, **hf}
  mapping.expect(c, 'scale_attn_weights', (True,))
  mapping.expect(c, 'scale_attn_by_inverse_layer_idx', (False,))
  mapping.expect(c, 'add_cross_attention', (False,))
  mapping.divisible_heads(c['n_embd'], c['n_head'])
  if c['embd_pdrop'] != c['resid_pdrop']:
    warnings.warn(
      f'embd_pdrop={c["embd_pdrop"]} differs from resid_pdrop={c["resid_pdrop"]}; '
      'our stack uses resid_pdrop for both (this only matters when training).',
      stacklevel=2,
    )
  return TransformerConfig(
    vocab_size=c['vocab_size'],
    num_layers=c['n_layer'],
    d_model=c['n_embd'],
    num_heads=c['n_head'],
    mlp_dim=c['n_inner'] or 4 * c['n_embd'],
    max_len=c['n_positions'],
    type_vocab_size=0,
    causal=True,
    pre_norm=True,
    embed_norm=False,
    final_norm=True,
    head_dim=None,
    activation=mapping.activation_from_hf(c, 'activation_function'),
    layer_norm_eps=c['layer_norm_epsilon'],
    dropout_rate=c['resid_pdrop'],
    attention_dropout_rate=c['attn_pdrop'],
    tie_embeddings=c['tie_word_embeddings'],
    init_std=c['initializer_range'],
  )


def config_to_hf(cfg: TransformerConfig) -> dict:
  return dict(
    model_type='gpt2',
    vocab_size=cfg.vocab_size,
    n_positions=cfg.max_len,
    n_embd=cfg.d_model,
    n_layer=cfg.num_layers,
    n_head=cfg.num_heads,
    n_inner=cfg.mlp_dim,
    activation_function=mapping.activation_to_hf(cfg),
    resid_pdrop=cfg.dropout_rate,
    embd_pdrop=cfg.dropout_rate,
    attn_pdrop=cfg.attention_dropout_rate,
    layer_norm_epsilon=cfg.layer_norm_eps,
    initializer_range=cfg.init_std,
    scale_attn_weights=True,
    scale_attn_by_inverse_layer_idx=False,
    tie_word_embeddings=cfg.tie_embeddings,
  )


def _blocks(cfg: TransformerConfig) -> list:
  """The layers, named alike in GPT-1 and GPT-2: ln_1 is the attention's norm (before it
  in GPT-2, after it in GPT-1), ln_2 the MLP's."""
  out = []
  for i in range(cfg.num_layers):
    src, ours = f'transformer.h.{i}', f'decoder/block_{i}'
    qkv = tuple(f'{ours}/attention/{n}' for n in ('query', 'key', 'value'))
    out += [
      *norm(f'{src}.ln_1', f'{ours}/attention_norm'),
      Rule(f'{src}.attn.c_attn.weight', tuple(f'{p}/kernel' for p in qkv), FUSED_QKV),
      Rule(f'{src}.attn.c_attn.bias', tuple(f'{p}/bias' for p in qkv), FUSED_QKV_BIAS),
      *dense(f'{src}.attn.c_proj', f'{ours}/attention/out', CONV1D_FROM_HEADS),
      *norm(f'{src}.ln_2', f'{ours}/mlp_norm'),
      *dense(f'{src}.mlp.c_fc', f'{ours}/mlp/wi', COPY),
      *dense(f'{src}.mlp.c_proj', f'{ours}/mlp/wo', COPY),
    ]
  return out


def _output(cfg: TransformerConfig, token_table: str) -> Rule | Tied:
  if cfg.tie_embeddings:
    return Tied('lm_head.weight', token_table)
  return Rule('lm_head.weight', ('lm_head/kernel',), LINEAR)


def rules(cfg: TransformerConfig) -> list:
  return [
    Rule('transformer.wte.weight', ('decoder/embed/token/embedding',)),
    Rule('transformer.wpe.weight', ('decoder/embed/position/embedding',)),
    *norm('transformer.ln_f', 'decoder/final_norm'),
    *_blocks(cfg),
    _output(cfg, 'transformer.wte.weight'),
  ]


_GPT1_DEFAULTS = dict(
  vocab_size=40478,
  n_positions=512,
  n_embd=768,
  n_layer=12,
  n_head=12,
  afn='gelu',
  resid_pdrop=0.1,
  embd_pdrop=0.1,
  attn_pdrop=0.1,
  layer_norm_epsilon=1e-5,
  initializer_range=0.02,
  tie_word_embeddings=True,
)


# openai-gpt's `afn` -> the HF activation name it stands for (modeling_openai's ACT_FNS).
_GPT1_AFN = {'gelu': 'gelu_new', 'relu': 'relu'}


def gpt1_config_from_hf(hf: dict) -> TransformerConfig:
  c = {**_GPT1_DEFAULTS, **hf}
  mapping.expect(c, 'afn', tuple(_GPT1_AFN))
  gpt2_like = {**c, 'activation_function': _GPT1_AFN[c['afn']], 'n_inner': None}
  return config_from_hf(gpt2_like).replace(pre_norm=False, final_norm=False)


def gpt1_config_to_hf(cfg: TransformerConfig) -> dict:
  if cfg.pre_norm or cfg.final_norm:
    raise ValueError('GPT-1 is post-LN without a final norm: pre_norm and final_norm must be off.')
  if cfg.mlp_dim != 4 * cfg.d_model:
    raise ValueError(f'mlp_dim={cfg.mlp_dim}: openai-gpt fixes it at 4 x d_model.')
  hf = config_to_hf(cfg.replace(pre_norm=True, final_norm=True))
  afn = {name: afn for afn, name in _GPT1_AFN.items()}.get(hf.pop('activation_function'))
  if afn is None:
    raise ValueError(f'activation={cfg.activation!r} has no openai-gpt name (gelu_tanh, relu).')
  hf.update(model_type='openai-gpt', afn=afn)
  for key in ('n_inner', 'scale_attn_weights', 'scale_attn_by_inverse_layer_idx'):
    hf.pop(key)
  return hf


def gpt1_rules(cfg: TransformerConfig) -> list:
  return [
    Rule('transformer.tokens_embed.weight', ('decoder/embed/token/embedding',)),
    Rule('transformer.positions_embed.weight', ('decoder/embed/position/embedding',)),
    *_blocks(cfg),
    _output(cfg, 'transformer.tokens_embed.weight'),
  ]


FAMILIES = {
  'gpt2': Family(
    name='gpt2',
    prefix='transformer',
    stack='decoder',
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    heads={'causal_lm': Head(heads.CausalLM, 'AutoModelForCausalLM', 'GPT2LMHeadModel')},
    # The causal-mask buffers older transformers versions saved with the weights.
    ignored=(r'transformer\.h\.\d+\.attn\.(bias|masked_bias)',),
  ),
  'openai-gpt': Family(
    name='openai-gpt',
    prefix='transformer',
    stack='decoder',
    config_from_hf=gpt1_config_from_hf,
    config_to_hf=gpt1_config_to_hf,
    rules=gpt1_rules,
    heads={'causal_lm': Head(heads.CausalLM, 'AutoModelForCausalLM', 'OpenAIGPTLMHeadModel')},
    ignored=(r'transformer\.position_ids', r'transformer\.h\.\d+\.attn\.bias'),
  ),
}
