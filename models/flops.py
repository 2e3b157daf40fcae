"""Training FLOPs per token of a model, for MFU (the PaLM / MaxText convention).

Training FLOPs per token = 6 x (multiply-adds per token in the forward pass of every
matmul a token passes through: every projection of the stack, the factorized-embedding
projection (ALBERT) and the model's own output head; not the embedding lookups)
+ attention scores: 12 x layers x keys attended x (heads x head_dim) (QK^T and the
weighted sum of V, forward and backward). Causal attention is NOT halved: our
attention computes the full score matrix and masks it, so the full count is the work
done. Embedding lookups, norms, softmaxes, biases and adapters are not counted.

The output head is the one the model runs (each head's `head_macs(seq_len,
predicted_len)` in models/heads.py and beside the models that add their own): a
vocabulary projection only for language models (MLM: BERT's transform, then the
vocabulary; LM: the vocabulary), a classifier's pooler and classes once per row, a
tagger's tags and a span extractor's two logits at every token. A masked LM that gathers
its `predicted_len` masked positions per row before the MLM transform and the vocabulary
projection (objectives/mlm.py) runs that head on predicted_len / seq_len of the tokens:
only those FLOPs are counted.

An encoder-decoder is counted per encoder token (the tokens the trainer counts) with
its decoder at its own length: for `decoder_len` decoder tokens per `seq_len` encoder
tokens, the decoder's self-attention, cross-attention query/output, MLP and output
projections run on r = decoder_len / seq_len decoder tokens per encoder token, while
the cross-attention key/value projections run on every encoder token; decoder
self-attention attends to `decoder_len` keys, cross-attention to `seq_len`. BART's
denoising has r = 1; T5's span corruption r ~ 0.2 (objectives/span_corruption.py).
"""

from models.transformer import TransformerConfig


def _attention_width(cfg: TransformerConfig) -> int:
  return cfg.num_heads * cfg.kv_dim  # The width of queries, keys and values.


def _mlp_params(cfg: TransformerConfig) -> int:
  """The feed-forward sub-layers' matmuls (MobileBERT stacks `num_mlps`, `inner_dim` wide)."""
  return cfg.num_mlps * (3 if cfg.gated_mlp else 2) * cfg.inner_dim * cfg.mlp_dim


def encoder_block_params(cfg: TransformerConfig) -> int:
  """Matmul params of one encoder block: attention and MLPs, and MobileBERT's bottlenecks
  (into and out of `bottleneck_dim`; with a shared query-key bottleneck the values read
  the wide block input)."""
  d, inner, width = cfg.d_model, cfg.inner_dim, _attention_width(cfg)
  if not cfg.bottleneck_dim:
    return 4 * d * width + _mlp_params(cfg)
  value_in = d if cfg.shared_qk_bottleneck else inner
  bottlenecks = (3 if cfg.shared_qk_bottleneck else 2) * d * inner
  return bottlenecks + (2 * inner + value_in) * width + width * inner + _mlp_params(cfg)


def attention_score_macs(cfg: TransformerConfig, keys: int) -> int:
  """Multiply-adds per query token of one attention layer's QK^T and weighted sum of V."""
  return 2 * keys * _attention_width(cfg)


def _embed_projection(cfg: TransformerConfig) -> int:
  """The projection of factorized (ALBERT) or trigram (MobileBERT) embeddings to d_model."""
  if not (cfg.embed_dim or cfg.embed_trigram):
    return 0
  return cfg.token_dim * (3 if cfg.embed_trigram else 1) * cfg.d_model


def vocabulary_macs(cfg: TransformerConfig, mlm_transform: bool) -> int:
  """Multiply-adds per token projected onto the vocabulary (after BERT's d_model x
  token_dim MLM transform when `mlm_transform`)."""
  return cfg.token_dim * cfg.vocab_size + (cfg.d_model * cfg.token_dim if mlm_transform else 0)


def pooled_classifier_macs(
  cfg: TransformerConfig, classes: int, seq_len: int, pooler: bool = True
) -> float:
  """Per token of the row: BERT's pooler (d x d, when `pooler`) and a classifier (d x
  classes), run once per row on its first token."""
  return (cfg.d_model * cfg.d_model * pooler + cfg.d_model * classes) / seq_len


def train_flops_per_token(
  cfg, seq_len: int, head_macs: float, decoder_len: int | None = None
) -> float:
  """Forward + backward FLOPs per (encoder) token.

  Args:
    cfg: the model config; families outside the Transformer (ELMo, word2vec) count
      their own FLOPs.
    seq_len: tokens per row (of the encoder, for an encoder-decoder).
    head_macs: the output head's forward multiply-adds per token of the row (per decoder
      token of an encoder-decoder), averaged over the row: a head run once per row counts
      1 / seq_len of its work per token, one run at gathered positions their fraction.
    decoder_len: decoder tokens per row of an encoder-decoder (default `seq_len`).
  """
  if not isinstance(cfg, TransformerConfig):
    return cfg.train_flops_per_token(seq_len)
  d, width = cfg.d_model, _attention_width(cfg)
  encoder = cfg.num_layers * encoder_block_params(cfg) + _embed_projection(cfg)
  scores = 6 * cfg.num_layers * attention_score_macs(cfg, seq_len)
  if not cfg.num_decoder_layers:
    return 6 * (encoder + head_macs) + scores
  decoder_len = seq_len if decoder_len is None else decoder_len
  r = decoder_len / seq_len  # Decoder tokens per encoder token.
  layers = cfg.num_decoder_layers
  # Per decoder token: self-attention (4 d w), cross-attention queries and outputs (2 d w),
  # the MLP; per encoder token: the cross-attention keys and values (2 d w) of every layer.
  decoder = layers * (r * (6 * d * width + _mlp_params(cfg)) + 2 * d * width)
  decoder_scores = r * 12 * layers * (decoder_len + seq_len) * width  # Self + cross.
  return 6 * (encoder + decoder + r * head_macs) + scores + decoder_scores


def model_flops_per_token(
  model,
  cfg,
  seq_len: int,
  decoder_len: int | None = None,
  predicted_len: int | None = None,
  side_passes: tuple[tuple[int, int], ...] = (),
  passes: float = 1.0,
) -> float:
  """Training FLOPs per token of `model`: its own `train_flops_per_token(seq_len, ...)`
  when it is more than one stack with a head (ELECTRA's generator and discriminator) or
  not a Transformer, else the stack's count with the head the model runs
  (`model.head_macs(seq_len, predicted_len)`). `predicted_len`: positions per row a
  masked LM projects onto the vocabulary (its gathered ones; default all).
  `side_passes`: (rows, tokens each) of the headless encoder passes the objective adds
  per row (objectives/api.side_passes), spread over the row's `seq_len` tokens. `passes`:
  forward + backward passes over each row (objectives/api.passes_per_row), multiplying
  the row's own count.

  Raises:
    TypeError: a Transformer model that does not say what its head costs; side or extra
      passes of a model that is not one Transformer stack.
  """
  if (side_passes or passes != 1.0) and (
    hasattr(model, 'train_flops_per_token') or not isinstance(cfg, TransformerConfig)
  ):
    raise TypeError(
      f'Side and extra passes are counted for one Transformer stack, not {type(model).__name__}.'
    )
  if hasattr(model, 'train_flops_per_token'):
    return model.train_flops_per_token(seq_len, predicted_len)
  if not isinstance(cfg, TransformerConfig):
    return cfg.train_flops_per_token(seq_len)
  if not hasattr(model, 'head_macs'):
    raise TypeError(
      f"{type(model).__name__} has no head_macs(seq_len, predicted_len): its output head's "
      'multiply-adds per token are needed for the FLOP count (models/flops.py).'
    )
  head = model.head_macs(seq_len, seq_len if predicted_len is None else predicted_len)
  own = passes * train_flops_per_token(cfg, seq_len, head, decoder_len)
  side = sum(rows * n * train_flops_per_token(cfg, n, 0.0) for rows, n in side_passes)
  return own + side / seq_len
