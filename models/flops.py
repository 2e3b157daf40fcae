"""Training FLOPs per token of a model, for MFU (the PaLM / MaxText convention).

Training FLOPs per token = 6 x (matmul parameters a token passes through: every
projection of the stack, the factorized-embedding projection (ALBERT), the MLM
transform and the output projection onto the vocabulary; not the embedding lookups)
+ attention scores: 12 x layers x keys attended x (heads x head_dim) (QK^T and the
weighted sum of V, forward and backward). Causal attention is NOT halved: our
attention computes the full score matrix and masks it, so the full count is the work
done. Embedding lookups, norms, softmaxes, biases and adapters are not counted.

An encoder-decoder is counted per encoder token (the tokens the trainer counts) with
its decoder at its own length: for `decoder_len` decoder tokens per `seq_len` encoder
tokens, the decoder's self-attention, cross-attention query/output, MLP and output
projections run on r = decoder_len / seq_len decoder tokens per encoder token, while
the cross-attention key/value projections run on every encoder token; decoder
self-attention attends to `decoder_len` keys, cross-attention to `seq_len`. BART's
denoising has r = 1; T5's span corruption r ~ 0.2 (objectives/span_corruption.py).

A masked LM that gathers its `predicted_len` masked positions per row before the MLM
transform and the vocabulary projection (objectives/mlm.py) runs that head on
predicted_len / seq_len of the tokens: only those FLOPs are counted.
"""

from models import heads
from models.transformer import TransformerConfig


def _attention_width(cfg: TransformerConfig) -> int:
  return cfg.num_heads * cfg.kv_dim  # The width of queries, keys and values.


def _mlp_params(cfg: TransformerConfig) -> int:
  """The feed-forward sub-layers' matmuls (MobileBERT stacks `num_mlps`, `inner_dim` wide)."""
  return cfg.num_mlps * (3 if cfg.gated_mlp else 2) * cfg.inner_dim * cfg.mlp_dim


def _encoder_block_params(cfg: TransformerConfig) -> int:
  """Matmul params of one encoder block: attention and MLPs, and MobileBERT's bottlenecks
  (into and out of `bottleneck_dim`; with a shared query-key bottleneck the values read
  the wide block input)."""
  d, inner, width = cfg.d_model, cfg.inner_dim, _attention_width(cfg)
  if not cfg.bottleneck_dim:
    return 4 * d * width + _mlp_params(cfg)
  value_in = d if cfg.shared_qk_bottleneck else inner
  bottlenecks = (3 if cfg.shared_qk_bottleneck else 2) * d * inner
  return bottlenecks + (2 * inner + value_in) * width + width * inner + _mlp_params(cfg)


def _embed_projection(cfg: TransformerConfig) -> int:
  """The projection of factorized (ALBERT) or trigram (MobileBERT) embeddings to d_model."""
  if not (cfg.embed_dim or cfg.embed_trigram):
    return 0
  return cfg.token_dim * (3 if cfg.embed_trigram else 1) * cfg.d_model


def matmul_params(cfg: TransformerConfig, mlm_head: bool) -> int:
  """Matmul parameters a token of a one-stack model passes through (and, for an
  encoder-decoder, those at r = 1: every stack at the encoder's length)."""
  d, width, token_dim = cfg.d_model, _attention_width(cfg), cfg.token_dim
  encoder = cfg.num_layers * _encoder_block_params(cfg)
  decoder = cfg.num_decoder_layers * (8 * d * width + _mlp_params(cfg))
  embed_projection = _embed_projection(cfg)
  head = token_dim * cfg.vocab_size + (d * token_dim if mlm_head else 0)
  return encoder + decoder + embed_projection + head


def train_flops_per_token(
  cfg,
  seq_len: int,
  mlm_head: bool,
  decoder_len: int | None = None,
  predicted_len: int | None = None,
) -> float:
  """Forward + backward FLOPs per (encoder) token.

  Args:
    cfg: the model config; families outside the Transformer (ELMo, word2vec) count
      their own FLOPs.
    seq_len: tokens per row (of the encoder, for an encoder-decoder).
    mlm_head: whether the output goes through BERT's MLM transform first.
    decoder_len: decoder tokens per row of an encoder-decoder (default `seq_len`).
    predicted_len: positions per row of a one-stack model that reach the output head
      (default `seq_len`; a masked LM's gathered masked positions).
  """
  if not isinstance(cfg, TransformerConfig):
    return cfg.train_flops_per_token(seq_len)
  d, width = cfg.d_model, _attention_width(cfg)
  head = cfg.token_dim * cfg.vocab_size + (d * cfg.token_dim if mlm_head else 0)
  encoder = cfg.num_layers * _encoder_block_params(cfg) + _embed_projection(cfg)
  scores = 12 * cfg.num_layers * seq_len * width
  if not cfg.num_decoder_layers:
    predicted = 1.0 if predicted_len is None else predicted_len / seq_len
    return 6 * (encoder + predicted * head) + scores
  decoder_len = seq_len if decoder_len is None else decoder_len
  r = decoder_len / seq_len  # Decoder tokens per encoder token.
  layers = cfg.num_decoder_layers
  # Per decoder token: self-attention (4 d w), cross-attention queries and outputs (2 d w),
  # the MLP; per encoder token: the cross-attention keys and values (2 d w) of every layer.
  decoder = layers * (r * (6 * d * width + _mlp_params(cfg)) + 2 * d * width)
  decoder_scores = r * 12 * layers * (decoder_len + seq_len) * width  # Self + cross.
  return 6 * (encoder + decoder + r * head) + scores + decoder_scores


def model_flops_per_token(
  model, cfg, seq_len: int, decoder_len: int | None = None, predicted_len: int | None = None
) -> float:
  """Training FLOPs per token of `model`: its own `train_flops_per_token(seq_len, ...)`
  when it is more than one stack with a head (ELECTRA's generator and discriminator),
  else the stack's count with an MLM transform for MaskedLM. `predicted_len`: positions
  per row projected onto the vocabulary (MLM's gathered ones; default all)."""
  if hasattr(model, 'train_flops_per_token'):
    return model.train_flops_per_token(seq_len, predicted_len)
  mlm_head = isinstance(model, heads.MaskedLM)
  return train_flops_per_token(cfg, seq_len, mlm_head, decoder_len, predicted_len)
