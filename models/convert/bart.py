"""BART: Hugging Face names <-> our post-LN encoder-decoder (`heads.Seq2SeqLM`).

Each stack has its own learned positions (offset by 2, as BART's table starts
after the padding rows) and a LayerNorm on its embeddings; one token table,
`shared`, feeds both and the tied output. `final_logits_bias` is a buffer
(zeros in the released checkpoints), not a parameter: it is skipped, and
`--verify` would show a non-zero one as a logit difference.
"""

from models import heads
from models.convert import mapping
from models.convert.mapping import (
  LINEAR_FROM_HEADS,
  Family,
  Head,
  Rule,
  Tied,
  attention_qkv,
  dense,
  norm,
)
from models.transformer import TransformerConfig

_OFFSET = 2  # BartLearnedPositionalEmbedding's offset.
_DEFAULTS = dict(
  vocab_size=50265,
  max_position_embeddings=1024,
  d_model=1024,
  encoder_layers=12,
  decoder_layers=12,
  encoder_attention_heads=16,
  decoder_attention_heads=16,
  encoder_ffn_dim=4096,
  decoder_ffn_dim=4096,
  activation_function='gelu',
  dropout=0.1,
  attention_dropout=0.0,
  activation_dropout=0.0,
  init_std=0.02,
  scale_embedding=False,
  tie_word_embeddings=True,
)
_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which BART uses.


def config_from_hf(hf: dict) -> TransformerConfig:
  c = {**_DEFAULTS, **hf}
  mapping.expect(c, 'scale_embedding', (False,))
  mapping.expect(c, 'tie_word_embeddings', (True,))
  mapping.expect(c, 'decoder_attention_heads', (c['encoder_attention_heads'],))
  mapping.expect(c, 'decoder_ffn_dim', (c['encoder_ffn_dim'],))
  mapping.divisible_heads(c['d_model'], c['encoder_attention_heads'])
  for key in ('add_final_layer_norm', 'normalize_before'):  # mBART-style variants.
    if c.get(key):
      raise ValueError(f'config.json: {key}={c[key]!r} is not supported (BART has neither).')
  return TransformerConfig(
    vocab_size=c['vocab_size'],
    num_layers=c['encoder_layers'],
    num_decoder_layers=c['decoder_layers'],
    d_model=c['d_model'],
    num_heads=c['encoder_attention_heads'],
    mlp_dim=c['encoder_ffn_dim'],
    max_len=c['max_position_embeddings'] + _OFFSET,
    position_offset=_OFFSET,
    type_vocab_size=0,
    pre_norm=False,
    embed_norm=True,
    final_norm=False,
    activation=mapping.activation_from_hf(c, 'activation_function'),
    layer_norm_eps=_LAYER_NORM_EPS,
    dropout_rate=c['dropout'],
    attention_dropout_rate=c['attention_dropout'],
    activation_dropout_rate=c['activation_dropout'],
    init_std=c['init_std'],
    pooler=False,
  )


def config_to_hf(cfg: TransformerConfig) -> dict:
  if cfg.position_offset != _OFFSET or cfg.num_layers == 0:
    raise ValueError(f'position_offset={cfg.position_offset} is not BART ({_OFFSET}).')
  return dict(
    model_type='bart',
    is_encoder_decoder=True,
    vocab_size=cfg.vocab_size,
    max_position_embeddings=cfg.max_len - _OFFSET,
    d_model=cfg.d_model,
    encoder_layers=cfg.num_layers,
    decoder_layers=cfg.num_decoder_layers,
    encoder_attention_heads=cfg.num_heads,
    decoder_attention_heads=cfg.num_heads,
    encoder_ffn_dim=cfg.mlp_dim,
    decoder_ffn_dim=cfg.mlp_dim,
    activation_function=mapping.activation_to_hf(cfg),
    dropout=cfg.dropout_rate,
    attention_dropout=cfg.attention_dropout_rate,
    activation_dropout=cfg.activation_dropout_rate,
    init_std=cfg.init_std,
    scale_embedding=False,
    tie_word_embeddings=True,
  )


def _attention(src: str, ours: str) -> list[Rule]:
  projections = {n: f'{src}.{n[0]}_proj' for n in ('query', 'key', 'value')}
  return [
    *attention_qkv(projections, ours),
    *dense(f'{src}.out_proj', f'{ours}/out', LINEAR_FROM_HEADS),
  ]


def rules(cfg: TransformerConfig) -> list:
  out = [Rule('model.shared.weight', ('shared/embedding',))]
  for stack, depth in (('encoder', cfg.num_layers), ('decoder', cfg.num_decoder_layers)):
    src_stack = f'model.{stack}'
    out += [
      Tied(f'{src_stack}.embed_tokens.weight', 'model.shared.weight'),
      Rule(f'{src_stack}.embed_positions.weight', (f'{stack}/embed/position/embedding',)),
      *norm(f'{src_stack}.layernorm_embedding', f'{stack}/embed/norm'),
    ]
    for i in range(depth):
      src, ours = f'{src_stack}.layers.{i}', f'{stack}/block_{i}'
      out += [
        *_attention(f'{src}.self_attn', f'{ours}/attention'),
        *norm(f'{src}.self_attn_layer_norm', f'{ours}/attention_norm'),
        *dense(f'{src}.fc1', f'{ours}/mlp/wi'),
        *dense(f'{src}.fc2', f'{ours}/mlp/wo'),
        *norm(f'{src}.final_layer_norm', f'{ours}/mlp_norm'),
      ]
      if stack == 'decoder':
        out += [
          *_attention(f'{src}.encoder_attn', f'{ours}/cross_attention'),
          *norm(f'{src}.encoder_attn_layer_norm', f'{ours}/cross_attention_norm'),
        ]
  out.append(Tied('lm_head.weight', 'model.shared.weight'))
  return out


FAMILIES = {
  'bart': Family(
    name='bart',
    prefix='model',
    stack='encoder',
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    heads={
      'seq2seq_lm': Head(heads.Seq2SeqLM, 'AutoModelForSeq2SeqLM', 'BartForConditionalGeneration')
    },
    ignored=(r'final_logits_bias',),
  )
}
