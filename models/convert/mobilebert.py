"""MobileBERT (Sun et al. 2020): Hugging Face names <-> our encoder with its MobileBERT fields.

transformers' MobileBERT is our post-LN encoder with five fields set
(models/transformer.py): `embed_trigram` (its 128-wide token embeddings of the next,
own and previous token, concatenated and projected to 512 by
`embedding_transformation`, before positions and token types are added),
`bottleneck_dim` = `intra_bottleneck_size` (`bottleneck.input` down to 128,
`output.bottleneck` back up to 512 with the block input as residual),
`shared_qk_bottleneck` = `key_query_shared_bottleneck` without
`use_bottleneck_attention` (queries and keys from `bottleneck.attention`, values from
the 512-wide input), `num_mlps` = `num_feedforward_networks` (`ffn.0`, `ffn.1`, ... run
first, then the layer's own `intermediate`/`output`: our 'mlp', 'mlp_1', ... in the order
they run) and `norm='affine'` for `normalization_type='no_norm'`.

The backbone (embeddings, layers, pooler) is converted. MobileBERT's MLM head (a
d_model-wide transform with a real LayerNorm, then the tied 128-wide table extended by
an untied [vocab, 384] block to 512 rows) and its NSP head have no counterpart in
models/heads.py: their tensors are listed as unconverted, never dropped silently.

Config values missing from a config.json take transformers' defaults (MobileBertConfig's
defaults are google/mobilebert-uncased's values), so a checkpoint means here what it
means to transformers.
"""

from models import heads
from models.convert import mapping
from models.convert.mapping import LINEAR_FROM_HEADS, Family, Head, Rule, attention_qkv, dense, norm
from models.transformer import TransformerConfig

_DEFAULTS = dict(
  vocab_size=30522,
  hidden_size=512,
  num_hidden_layers=24,
  num_attention_heads=4,
  intermediate_size=512,
  hidden_act='relu',
  hidden_dropout_prob=0.0,
  attention_probs_dropout_prob=0.1,
  max_position_embeddings=512,
  type_vocab_size=2,
  initializer_range=0.02,
  layer_norm_eps=1e-12,
  pad_token_id=0,
  embedding_size=128,
  trigram_input=True,
  use_bottleneck=True,
  intra_bottleneck_size=128,
  use_bottleneck_attention=False,
  key_query_shared_bottleneck=True,
  num_feedforward_networks=4,
  normalization_type='no_norm',
  classifier_activation=True,
  tie_word_embeddings=True,
  is_decoder=False,
  add_cross_attention=False,
)
# transformers builds the embedding LayerNorm and the last FFN's output LayerNorm without
# `eps`, i.e. with torch's 1e-5, and the others with layer_norm_eps: one stack-wide eps is
# exact only when layer_norm_eps is that too.
_TORCH_LAYER_NORM_EPS = 1e-5


def config_from_hf(hf: dict) -> TransformerConfig:
  c = {**_DEFAULTS, **hf}
  mapping.expect(c, 'is_decoder', (False,))
  mapping.expect(c, 'add_cross_attention', (False,))
  mapping.expect(c, 'normalization_type', ('no_norm', 'layer_norm'))
  if c['normalization_type'] == 'layer_norm':
    mapping.expect(c, 'layer_norm_eps', (_TORCH_LAYER_NORM_EPS,))
  d_model, bottleneck = c['hidden_size'], c['intra_bottleneck_size']
  inner = bottleneck if c['use_bottleneck'] else d_model  # transformers' true_hidden_size.
  if c['use_bottleneck'] and not (
    c['use_bottleneck_attention'] or c['key_query_shared_bottleneck']
  ):
    raise ValueError(
      'config.json: use_bottleneck=True needs use_bottleneck_attention or '
      'key_query_shared_bottleneck (without either, transformers feeds the '
      f'{d_model}-wide layer input to {bottleneck}-wide query and key layers).'
    )
  # use_bottleneck_attention wins over key_query_shared_bottleneck, as in transformers.
  shared_qk = c['use_bottleneck'] and not c['use_bottleneck_attention']
  if not c['trigram_input'] and c['embedding_size'] != d_model:
    raise ValueError(
      f'config.json: trigram_input=False with embedding_size={c["embedding_size"]} != '
      f'hidden_size={d_model} is not supported (only the trigram input is projected '
      'before positions are added here); released MobileBERT has trigram_input=True.'
    )
  mapping.divisible_heads(inner, c['num_attention_heads'])
  if c['num_feedforward_networks'] < 1:
    raise ValueError(f'config.json: num_feedforward_networks={c["num_feedforward_networks"]}.')
  return TransformerConfig(
    vocab_size=c['vocab_size'],
    num_layers=c['num_hidden_layers'],
    d_model=d_model,
    num_heads=c['num_attention_heads'],
    mlp_dim=c['intermediate_size'],
    max_len=c['max_position_embeddings'],
    embed_dim=c['embedding_size'] if c['embedding_size'] != d_model else None,
    embed_trigram=c['trigram_input'],
    bottleneck_dim=bottleneck if c['use_bottleneck'] else 0,
    shared_qk_bottleneck=shared_qk,
    num_mlps=c['num_feedforward_networks'],
    norm='affine' if c['normalization_type'] == 'no_norm' else 'layer',
    type_vocab_size=c['type_vocab_size'],
    activation=mapping.activation_from_hf(c, 'hidden_act'),
    layer_norm_eps=c['layer_norm_eps'],
    dropout_rate=c['hidden_dropout_prob'],
    attention_dropout_rate=c['attention_probs_dropout_prob'],
    tie_embeddings=c['tie_word_embeddings'],
    init_std=c['initializer_range'],
    causal=False,
    pre_norm=False,
    embed_norm=True,
    final_norm=False,
    head_dim=None,
  )


def config_to_hf(cfg: TransformerConfig) -> dict:
  return dict(
    model_type='mobilebert',
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
    embedding_size=cfg.token_dim,
    trigram_input=cfg.embed_trigram,
    use_bottleneck=bool(cfg.bottleneck_dim),
    intra_bottleneck_size=cfg.bottleneck_dim or cfg.d_model,
    use_bottleneck_attention=bool(cfg.bottleneck_dim) and not cfg.shared_qk_bottleneck,
    key_query_shared_bottleneck=cfg.shared_qk_bottleneck,
    num_feedforward_networks=cfg.num_mlps,
    normalization_type='no_norm' if cfg.norm == 'affine' else cfg.norm + '_norm',
    classifier_activation=cfg.pooler,
    tie_word_embeddings=cfg.tie_embeddings,
  )


def _layer(cfg: TransformerConfig, src: str, ours: str) -> list[Rule]:
  """One MobileBertLayer: attention, the stacked FFNs in the order they run, bottlenecks."""
  rules = [
    *attention_qkv(
      {n: f'{src}.attention.self.{n}' for n in ('query', 'key', 'value')}, f'{ours}/attention'
    ),  # fmt: skip
    *dense(f'{src}.attention.output.dense', f'{ours}/attention/out', LINEAR_FROM_HEADS),
    *norm(f'{src}.attention.output.LayerNorm', f'{ours}/attention_norm'),
  ]
  # transformers runs ffn.0 .. ffn.{n-2}, then the layer's intermediate/output.
  ffns = [(f'{src}.ffn.{j}.intermediate', f'{src}.ffn.{j}.output') for j in range(cfg.num_mlps - 1)]
  ffns.append((f'{src}.intermediate', f'{src}.output'))
  for j, (intermediate, output) in enumerate(ffns):
    mlp = f'{ours}/mlp_{j}' if j else f'{ours}/mlp'
    rules += dense(f'{intermediate}.dense', f'{mlp}/wi')
    rules += dense(f'{output}.dense', f'{mlp}/wo')
    rules += norm(f'{output}.LayerNorm', f'{mlp}_norm')
  if cfg.bottleneck_dim:
    rules += dense(f'{src}.bottleneck.input.dense', f'{ours}/bottleneck_in')
    rules += norm(f'{src}.bottleneck.input.LayerNorm', f'{ours}/bottleneck_in_norm')
    if cfg.shared_qk_bottleneck:
      rules += dense(f'{src}.bottleneck.attention.dense', f'{ours}/bottleneck_qk')
      rules += norm(f'{src}.bottleneck.attention.LayerNorm', f'{ours}/bottleneck_qk_norm')
    rules += dense(f'{src}.output.bottleneck.dense', f'{ours}/bottleneck_out')
    rules += norm(f'{src}.output.bottleneck.LayerNorm', f'{ours}/bottleneck_out_norm')
  return rules


def rules(cfg: TransformerConfig) -> list[Rule]:
  src = 'mobilebert.embeddings'
  embed = 'encoder/embed'
  found = [
    Rule(f'{src}.word_embeddings.weight', (f'{embed}/token/embedding',)),
    Rule(f'{src}.position_embeddings.weight', (f'{embed}/position/embedding',)),
    *norm(f'{src}.LayerNorm', f'{embed}/norm'),
  ]
  if cfg.type_vocab_size:
    found.append(Rule(f'{src}.token_type_embeddings.weight', (f'{embed}/token_type/embedding',)))
  if cfg.embed_trigram:  # transformers always holds the layer; it runs only on trigrams here.
    found += dense(f'{src}.embedding_transformation', f'{embed}/project')
  for i in range(cfg.num_layers):
    found += _layer(cfg, f'mobilebert.encoder.layer.{i}', f'encoder/block_{i}')
  found += dense('mobilebert.pooler.dense', 'pooler/dense')
  return found


FAMILIES = {
  'mobilebert': Family(
    name='mobilebert',
    prefix='mobilebert',
    stack='encoder',
    config_from_hf=config_from_hf,
    config_to_hf=config_to_hf,
    rules=rules,
    heads={'backbone': Head(heads.Backbone, 'AutoModel', 'MobileBertModel')},
    ignored=(r'.*\.position_ids', r'.*\.token_type_ids'),
  )
}
