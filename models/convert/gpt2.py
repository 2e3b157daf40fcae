"""GPT-2: Hugging Face names <-> our causal pre-LN stack (`heads.CausalLM`, 'decoder').

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


def rules(cfg: TransformerConfig) -> list:
  out = [
    Rule('transformer.wte.weight', ('decoder/embed/token/embedding',)),
    Rule('transformer.wpe.weight', ('decoder/embed/position/embedding',)),
    *norm('transformer.ln_f', 'decoder/final_norm'),
  ]
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
  if cfg.tie_embeddings:
    out.append(Tied('lm_head.weight', 'transformer.wte.weight'))
  else:
    out.append(Rule('lm_head.weight', ('lm_head/kernel',), LINEAR))
  return out


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
  )
}
