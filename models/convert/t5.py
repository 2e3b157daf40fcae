"""T5 v1.0 and v1.1: Hugging Face names <-> our encoder-decoder (`heads.Seq2SeqLM`).

Both stacks are pre-norm with T5's scale-only RMS norm, no biases, and one
relative position bias table per stack (transformers keeps it in the first
layer's self-attention; ours is the stack's `relative_bias`). One token table,
`shared`, feeds both stacks; v1.0 ties the output to it and rescales the final
states by d_model**-0.5, v1.1 (`feed_forward_proj='gated-gelu'`) has its own
`lm_head` and a gated MLP (`wi_0`, `wi_1`).
"""

from models import heads
from models.convert import mapping
from models.convert.mapping import (
  LINEAR,
  LINEAR_FROM_HEADS,
  LINEAR_TO_HEADS,
  Family,
  Head,
  Rule,
  Tied,
)
from models.transformer import TransformerConfig

_DEFAULTS = dict(
  vocab_size=32128,
  d_model=512,
  d_kv=64,
  d_ff=2048,
  num_layers=6,
  num_decoder_layers=None,
  num_heads=8,
  relative_attention_num_buckets=32,
  relative_attention_max_distance=128,
  dropout_rate=0.1,
  layer_norm_epsilon=1e-6,
  initializer_factor=1.0,
  feed_forward_proj='relu',
  tie_word_embeddings=True,
)
# feed_forward_proj -> (our activation, gated MLP).
_MLPS = {'relu': ('relu', False), 'gated-gelu': ('gelu_tanh', True), 'gated-relu': ('relu', True)}


def config_from_hf(hf: dict) -> TransformerConfig:
  c = {**_DEFAULTS, **hf}
  mapping.expect(c, 'feed_forward_proj', tuple(_MLPS))
  activation, gated = _MLPS[c['feed_forward_proj']]
  tied = c['tie_word_embeddings']
  return TransformerConfig(
    vocab_size=c['vocab_size'],
    num_layers=c['num_layers'],
    num_decoder_layers=c['num_decoder_layers'] or c['num_layers'],
    d_model=c['d_model'],
    num_heads=c['num_heads'],
    head_dim=c['d_kv'],
    mlp_dim=c['d_ff'],
    position='relative',
    relative_buckets=c['relative_attention_num_buckets'],
    relative_max_distance=c['relative_attention_max_distance'],
    type_vocab_size=0,
    pre_norm=True,
    embed_norm=False,
    final_norm=True,
    norm='rms',
    use_bias=False,
    scale_attention=False,
    activation=activation,
    gated_mlp=gated,
    layer_norm_eps=c['layer_norm_epsilon'],
    dropout_rate=c['dropout_rate'],
    attention_dropout_rate=c['dropout_rate'],
    activation_dropout_rate=c['dropout_rate'],
    tie_embeddings=tied,
    scale_tied_output=tied,
    fan_in_init=True,
    init_std=c['initializer_factor'],
    pooler=False,
  )


def config_to_hf(cfg: TransformerConfig) -> dict:
  mlps = {value: key for key, value in _MLPS.items()}
  if (cfg.activation, cfg.gated_mlp) not in mlps:
    raise ValueError(f'activation={cfg.activation!r}, gated_mlp={cfg.gated_mlp} has no T5 name.')
  return dict(
    model_type='t5',
    is_encoder_decoder=True,
    vocab_size=cfg.vocab_size,
    d_model=cfg.d_model,
    d_kv=cfg.kv_dim,
    d_ff=cfg.mlp_dim,
    num_layers=cfg.num_layers,
    num_decoder_layers=cfg.num_decoder_layers,
    num_heads=cfg.num_heads,
    relative_attention_num_buckets=cfg.relative_buckets,
    relative_attention_max_distance=cfg.relative_max_distance,
    dropout_rate=cfg.dropout_rate,
    layer_norm_epsilon=cfg.layer_norm_eps,
    initializer_factor=cfg.init_std,
    feed_forward_proj=mlps[(cfg.activation, cfg.gated_mlp)],
    tie_word_embeddings=cfg.tie_embeddings,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
  )


def _attention(src: str, ours: str) -> list[Rule]:
  return [
    *(Rule(f'{src}.{s}.weight', (f'{ours}/{o}/kernel',), LINEAR_TO_HEADS)
      for s, o in (('q', 'query'), ('k', 'key'), ('v', 'value'))),
    Rule(f'{src}.o.weight', (f'{ours}/out/kernel',), LINEAR_FROM_HEADS),
  ]  # fmt: skip


def _mlp(src: str, ours: str, gated: bool) -> list[Rule]:
  names = ('wi_0', 'wi_1', 'wo') if gated else ('wi', 'wo')
  return [Rule(f'{src}.{n}.weight', (f'{ours}/{n}/kernel',), LINEAR) for n in names]


def _scale(src: str, ours: str) -> Rule:
  return Rule(f'{src}.weight', (f'{ours}/scale',))


def rules(cfg: TransformerConfig) -> list:
  out = [Rule('shared.weight', ('shared/embedding',))]
  for stack, depth in (('encoder', cfg.num_layers), ('decoder', cfg.num_decoder_layers)):
    out += [
      Tied(f'{stack}.embed_tokens.weight', 'shared.weight'),
      Rule(
        f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
        (f'{stack}/relative_bias/embedding',),
      ),
      _scale(f'{stack}.final_layer_norm', f'{stack}/final_norm'),
    ]
    for i in range(depth):
      src, ours = f'{stack}.block.{i}.layer', f'{stack}/block_{i}'
      sublayers = [('SelfAttention', 'attention')]
      if stack == 'decoder':
        sublayers.append(('EncDecAttention', 'cross_attention'))
      for j, (name, our_name) in enumerate(sublayers):
        out += _attention(f'{src}.{j}.{name}', f'{ours}/{our_name}')
        out.append(_scale(f'{src}.{j}.layer_norm', f'{ours}/{our_name}_norm'))
      j = len(sublayers)
      out += _mlp(f'{src}.{j}.DenseReluDense', f'{ours}/mlp', cfg.gated_mlp)
      out.append(_scale(f'{src}.{j}.layer_norm', f'{ours}/mlp_norm'))
  if cfg.tie_embeddings:
    out.append(Tied('lm_head.weight', 'shared.weight'))
  else:
    out.append(Rule('lm_head.weight', ('lm_head/kernel',), LINEAR))
  return out


FAMILIES = {
  't5': Family(
    name='t5',
    prefix='',
    stack='encoder',
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    heads={
      'seq2seq_lm': Head(heads.Seq2SeqLM, 'AutoModelForSeq2SeqLM', 'T5ForConditionalGeneration')
    },
  )
}
