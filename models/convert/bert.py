"""BERT, RoBERTa, ALBERT, ELECTRA and DistilBERT: Hugging Face names <-> our encoder.

All five are our post-LN encoder (models/transformer.py) with an embedding
LayerNorm; they differ in names and in a few config fields:

- RoBERTa: positions start at pad_token_id + 1 (our `position_offset`); its
  MLM head (`lm_head`) always applies exact GELU.
- ALBERT: factorized embeddings (E = embedding_size, projected by
  `encoder.embedding_hidden_mapping_in`) and one block for every layer
  (`share_layers`); only 1 hidden group of 1 inner layer, as released.
- ELECTRA: factorized embeddings when embedding_size != hidden_size
  (`embeddings_project`); the generator's MLM head always applies exact GELU;
  the discriminator head (`discriminator_predictions`) has no counterpart here.
- DistilBERT: no token types, no pooler, its own names (`q_lin`, `ffn.lin1`, ...).

Config values missing from a config.json take transformers' defaults, so a
checkpoint means here what it means to transformers.
"""

from models import heads
from models.convert import mapping
from models.convert.mapping import (
  LINEAR,
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

_BERT_DEFAULTS = dict(
  vocab_size=30522,
  hidden_size=768,
  num_hidden_layers=12,
  num_attention_heads=12,
  intermediate_size=3072,
  hidden_act='gelu',
  hidden_dropout_prob=0.1,
  attention_probs_dropout_prob=0.1,
  max_position_embeddings=512,
  type_vocab_size=2,
  initializer_range=0.02,
  layer_norm_eps=1e-12,
  pad_token_id=0,
  position_embedding_type='absolute',
  tie_word_embeddings=True,
  is_decoder=False,
  add_cross_attention=False,
)
_DEFAULTS = {
  'bert': _BERT_DEFAULTS,
  'roberta': dict(_BERT_DEFAULTS, vocab_size=50265, pad_token_id=1),
  'albert': dict(
    _BERT_DEFAULTS,
    vocab_size=30000,
    embedding_size=128,
    hidden_size=4096,
    num_attention_heads=64,
    intermediate_size=16384,
    hidden_act='gelu_new',
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    num_hidden_groups=1,
    inner_group_num=1,
  ),
  'electra': dict(
    _BERT_DEFAULTS,
    embedding_size=128,
    hidden_size=256,
    num_attention_heads=4,
    intermediate_size=1024,
  ),
  'distilbert': dict(
    vocab_size=30522,
    dim=768,
    n_layers=6,
    n_heads=12,
    hidden_dim=3072,
    activation='gelu',
    dropout=0.1,
    attention_dropout=0.1,
    max_position_embeddings=512,
    initializer_range=0.02,
    tie_word_embeddings=True,
  ),
}
_DISTILBERT_EPS = 1e-12  # Fixed in DistilBERT; not a config field.
_STRUCTURE = dict(causal=False, pre_norm=False, embed_norm=True, final_norm=False, head_dim=None)
_ENCODER = ('bert', 'roberta', 'albert', 'electra')


def _encoder_config_from_hf(family: str, hf: dict) -> TransformerConfig:
  c = {**_DEFAULTS[family], **hf}
  mapping.expect(c, 'position_embedding_type', ('absolute',))
  mapping.expect(c, 'is_decoder', (False,))
  mapping.expect(c, 'add_cross_attention', (False,))
  if family == 'albert':
    mapping.expect(c, 'num_hidden_groups', (1,))
    mapping.expect(c, 'inner_group_num', (1,))
  d_model = c['hidden_size']
  mapping.divisible_heads(d_model, c['num_attention_heads'])
  embed_dim = c.get('embedding_size')
  if family == 'electra' and embed_dim == d_model:
    embed_dim = None  # ELECTRA has no projection then; ALBERT always has one.
  return TransformerConfig(
    vocab_size=c['vocab_size'],
    num_layers=c['num_hidden_layers'],
    d_model=d_model,
    num_heads=c['num_attention_heads'],
    mlp_dim=c['intermediate_size'],
    max_len=c['max_position_embeddings'],
    position_offset=c['pad_token_id'] + 1 if family == 'roberta' else 0,
    embed_dim=embed_dim,
    share_layers=family == 'albert',
    type_vocab_size=c['type_vocab_size'],
    activation=mapping.activation_from_hf(c, 'hidden_act'),
    layer_norm_eps=c['layer_norm_eps'],
    dropout_rate=c['hidden_dropout_prob'],
    attention_dropout_rate=c['attention_probs_dropout_prob'],
    tie_embeddings=c['tie_word_embeddings'],
    init_std=c['initializer_range'],
    **_STRUCTURE,
  )


def _encoder_config_to_hf(family: str, cfg: TransformerConfig) -> dict:
  hf = dict(
    model_type=family,
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.d_model,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    intermediate_size=cfg.mlp_dim,
    hidden_act=mapping.activation_to_hf(cfg),
    hidden_dropout_prob=cfg.dropout_rate,
    attention_probs_dropout_prob=cfg.attention_dropout_rate,
    max_position_embeddings=cfg.max_len,
    type_vocab_size=cfg.type_vocab_size,
    initializer_range=cfg.init_std,
    layer_norm_eps=cfg.layer_norm_eps,
    position_embedding_type='absolute',
    tie_word_embeddings=cfg.tie_embeddings,
  )
  if family == 'roberta':
    hf['pad_token_id'] = cfg.position_offset - 1
  if family in ('albert', 'electra'):
    hf['embedding_size'] = cfg.token_dim
  if family == 'albert':
    hf.update(num_hidden_groups=1, inner_group_num=1)
  return hf


def _distilbert_config_from_hf(hf: dict) -> TransformerConfig:
  c = {**_DEFAULTS['distilbert'], **hf}
  mapping.divisible_heads(c['dim'], c['n_heads'])
  return TransformerConfig(
    vocab_size=c['vocab_size'],
    num_layers=c['n_layers'],
    d_model=c['dim'],
    num_heads=c['n_heads'],
    mlp_dim=c['hidden_dim'],
    max_len=c['max_position_embeddings'],
    type_vocab_size=0,
    activation=mapping.activation_from_hf(c, 'activation'),
    layer_norm_eps=_DISTILBERT_EPS,
    dropout_rate=c['dropout'],
    attention_dropout_rate=c['attention_dropout'],
    tie_embeddings=c['tie_word_embeddings'],
    init_std=c['initializer_range'],
    **_STRUCTURE,
  )


def _distilbert_config_to_hf(cfg: TransformerConfig) -> dict:
  return dict(
    model_type='distilbert',
    vocab_size=cfg.vocab_size,
    dim=cfg.d_model,
    n_layers=cfg.num_layers,
    n_heads=cfg.num_heads,
    hidden_dim=cfg.mlp_dim,
    activation=mapping.activation_to_hf(cfg),
    dropout=cfg.dropout_rate,
    attention_dropout=cfg.attention_dropout_rate,
    max_position_embeddings=cfg.max_len,
    initializer_range=cfg.init_std,
    sinusoidal_pos_embds=False,  # The table is stored either way; ours is a plain table.
    tie_word_embeddings=cfg.tie_embeddings,
  )


def _bert_block(src: str, ours: str) -> list[Rule]:
  """BERT's layer names (RoBERTa and ELECTRA reuse them)."""
  return [
    *attention_qkv(
      {n: f'{src}.attention.self.{n}' for n in ('query', 'key', 'value')}, f'{ours}/attention'
    ),
    *dense(f'{src}.attention.output.dense', f'{ours}/attention/out', LINEAR_FROM_HEADS),
    *norm(f'{src}.attention.output.LayerNorm', f'{ours}/attention_norm'),
    *dense(f'{src}.intermediate.dense', f'{ours}/mlp/wi'),
    *dense(f'{src}.output.dense', f'{ours}/mlp/wo'),
    *norm(f'{src}.output.LayerNorm', f'{ours}/mlp_norm'),
  ]


def _albert_block(src: str, ours: str) -> list[Rule]:
  return [
    *attention_qkv(
      {n: f'{src}.attention.{n}' for n in ('query', 'key', 'value')}, f'{ours}/attention'
    ),
    *dense(f'{src}.attention.dense', f'{ours}/attention/out', LINEAR_FROM_HEADS),
    *norm(f'{src}.attention.LayerNorm', f'{ours}/attention_norm'),
    *dense(f'{src}.ffn', f'{ours}/mlp/wi'),
    *dense(f'{src}.ffn_output', f'{ours}/mlp/wo'),
    *norm(f'{src}.full_layer_layer_norm', f'{ours}/mlp_norm'),
  ]


def _distilbert_block(src: str, ours: str) -> list[Rule]:
  qkv = {'query': f'{src}.attention.q_lin', 'key': f'{src}.attention.k_lin'}
  qkv['value'] = f'{src}.attention.v_lin'
  return [
    *attention_qkv(qkv, f'{ours}/attention'),
    *dense(f'{src}.attention.out_lin', f'{ours}/attention/out', LINEAR_FROM_HEADS),
    *norm(f'{src}.sa_layer_norm', f'{ours}/attention_norm'),
    *dense(f'{src}.ffn.lin1', f'{ours}/mlp/wi'),
    *dense(f'{src}.ffn.lin2', f'{ours}/mlp/wo'),
    *norm(f'{src}.output_layer_norm', f'{ours}/mlp_norm'),
  ]


def _embeddings(src: str, cfg: TransformerConfig) -> list[Rule]:
  rules = [
    Rule(f'{src}.word_embeddings.weight', ('encoder/embed/token/embedding',)),
    Rule(f'{src}.position_embeddings.weight', ('encoder/embed/position/embedding',)),
    *norm(f'{src}.LayerNorm', 'encoder/embed/norm'),
  ]
  if cfg.type_vocab_size:
    rules.append(
      Rule(f'{src}.token_type_embeddings.weight', ('encoder/embed/token_type/embedding',))
    )
  return rules


def _mlm_head(
  cfg: TransformerConfig, transform: str, layer_norm: str, bias: str, decoder: str, word: str
) -> list:
  """The MLM head: transform Dense, LayerNorm, output bias, decoder tied to `word` (or not)."""
  rules = [
    *dense(transform, 'mlm_transform'),
    *norm(layer_norm, 'mlm_norm'),
    Rule(bias, ('mlm_bias',)),
  ]
  if cfg.tie_embeddings:
    return [*rules, Tied(f'{decoder}.weight', word)]
  return [*rules, Rule(f'{decoder}.weight', ('mlm_decoder/kernel',), LINEAR)]


def _rules(family: str, cfg: TransformerConfig) -> list:
  p = family
  word = f'{p}.embeddings.word_embeddings.weight'
  layers = range(1 if cfg.share_layers else cfg.num_layers)
  ours = ['encoder/block'] if cfg.share_layers else [f'encoder/block_{i}' for i in layers]
  rules = _embeddings(f'{p}.embeddings', cfg)
  # transformers hard-codes exact GELU in these two heads; other activations
  # leave the head unconverted (and listed) rather than wrong.
  exact_gelu = cfg.activation == 'gelu'
  if family == 'bert':
    for i in layers:
      rules += _bert_block(f'bert.encoder.layer.{i}', ours[i])
    rules += dense('bert.pooler.dense', 'pooler/dense')
    rules += _mlm_head(
      cfg,
      'cls.predictions.transform.dense',
      'cls.predictions.transform.LayerNorm',
      'cls.predictions.bias',
      'cls.predictions.decoder',
      word,
    )
    rules.append(Tied('cls.predictions.decoder.bias', 'cls.predictions.bias'))
  elif family == 'roberta':
    for i in layers:
      rules += _bert_block(f'roberta.encoder.layer.{i}', ours[i])
    rules += dense('roberta.pooler.dense', 'pooler/dense')
    if exact_gelu:
      rules += _mlm_head(
        cfg, 'lm_head.dense', 'lm_head.layer_norm', 'lm_head.bias', 'lm_head.decoder', word
      )
      rules.append(Tied('lm_head.decoder.bias', 'lm_head.bias'))
  elif family == 'albert':
    rules += dense('albert.encoder.embedding_hidden_mapping_in', 'encoder/embed/project')
    rules += _albert_block('albert.encoder.albert_layer_groups.0.albert_layers.0', ours[0])
    rules += dense('albert.pooler', 'pooler/dense')
    rules += _mlm_head(
      cfg,
      'predictions.dense',
      'predictions.LayerNorm',
      'predictions.bias',
      'predictions.decoder',
      word,
    )
    rules.append(Tied('predictions.decoder.bias', 'predictions.bias'))
  elif family == 'electra':
    if cfg.embed_dim:
      rules += dense('electra.embeddings_project', 'encoder/embed/project')
    for i in layers:
      rules += _bert_block(f'electra.encoder.layer.{i}', ours[i])
    if exact_gelu:
      rules += _mlm_head(
        cfg,
        'generator_predictions.dense',
        'generator_predictions.LayerNorm',
        'generator_lm_head.bias',
        'generator_lm_head',
        word,
      )
  elif family == 'distilbert':
    for i in layers:
      rules += _distilbert_block(f'distilbert.transformer.layer.{i}', ours[i])
    rules += _mlm_head(
      cfg, 'vocab_transform', 'vocab_layer_norm', 'vocab_projector.bias', 'vocab_projector', word
    )
  return rules


def _family(name: str, model_class: str) -> Family:
  if name in _ENCODER:
    from_hf = lambda hf: _encoder_config_from_hf(name, hf)  # noqa: E731
    to_hf = lambda cfg: _encoder_config_to_hf(name, cfg)  # noqa: E731
  else:
    from_hf, to_hf = _distilbert_config_from_hf, _distilbert_config_to_hf
  return Family(
    name=name,
    prefix=name,
    stack='encoder',
    config_from_hf=from_hf,
    config_to_hf=to_hf,
    rules=lambda cfg: _rules(name, cfg),
    heads={
      'backbone': Head(heads.Backbone, 'AutoModel', f'{model_class}Model'),
      'masked_lm': Head(heads.MaskedLM, 'AutoModelForMaskedLM', f'{model_class}ForMaskedLM'),
    },
    ignored=(r'.*\.position_ids', r'.*\.token_type_ids'),
  )


FAMILIES = {
  name: _family(name, model_class)
  for name, model_class in (
    ('bert', 'Bert'),
    ('roberta', 'Roberta'),
    ('albert', 'Albert'),
    ('electra', 'Electra'),
    ('distilbert', 'DistilBert'),
  )
}
