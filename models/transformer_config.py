"""`TransformerConfig`: the fields of the one Transformer stack (models/transformer.py).

Every family is a preset of these fields (models/presets.py); the stack's modules read
them. Kept apart from the modules so that the stack file holds layers only.
"""

import dataclasses

from models.model_config import ModelConfig


@dataclasses.dataclass(frozen=True)
class TransformerConfig(ModelConfig):
  """Shape and behaviour of one Transformer stack; presets fill it in."""

  vocab_size: int
  num_layers: int
  d_model: int
  num_heads: int
  mlp_dim: int
  num_decoder_layers: int = 0  # > 0: an encoder-decoder (T5, BART, MASS) with this deep a decoder.
  max_len: int = 512  # Rows of the learned position table (offset included).
  position: str = 'learned'  # 'learned' table, or 'relative' buckets (T5) shared across layers.
  relative_buckets: int = 32  # T5: buckets of the relative position bias.
  relative_max_distance: int = 128  # T5: distances beyond this share the last bucket.
  position_offset: int = 0  # RoBERTa: positions start at padding_idx + 1 = 2.
  embed_dim: int | None = None  # Factorized embeddings (ALBERT, ELECTRA): E, projected to d_model.
  share_layers: bool = False  # ALBERT: one block's parameters used by every layer.
  pooler: bool = False  # BERT-style pooler (tanh Dense on the first token) in the backbone.
  type_vocab_size: int = 2  # Token-type (segment A/B) embeddings; 0 disables them.
  # LayoutLM: rows of the 2-D position tables (x, y, height, width; 1024), added for each
  # token's box [x0, y0, x1, y1] on a 0-1000 grid (data/layout.py); 0 disables them.
  max_2d_positions: int = 0
  head_dim: int | None = None  # Defaults to d_model // num_heads.
  causal: bool = False  # Decoder-only (GPT) when True.
  pre_norm: bool = False  # Pre-LN (GPT-2) when True, post-LN (BERT, GPT-1) when False.
  embed_norm: bool = True  # LayerNorm on the summed embeddings (BERT).
  final_norm: bool = False  # LayerNorm after the last block (GPT-2, pre-LN stacks).
  activation: str = 'gelu'  # 'gelu' (exact erf, BERT), 'gelu_tanh' (GPT-2) or 'relu' (ERNIE).
  gated_mlp: bool = False  # T5 v1.1: act(x W0) * (x W1), then Wo.
  # 'layer' (LayerNorm), 'rms' (T5: scale-only, no mean, no bias) or 'affine' (MobileBERT's
  # NoNorm: x * scale + bias, no statistics at all).
  norm: str = 'layer'
  use_bias: bool = True  # Biases in the dense layers (T5 has none).
  scale_attention: bool = True  # Divide logits by sqrt(head_dim); T5 folds it into the init.
  layer_norm_eps: float = 1e-12
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  # Dropout on the MLP's hidden activations: T5 and BART have it; BERT, GPT and their
  # kin drop only the sub-layer outputs (residual dropout), never the intermediate ones.
  activation_dropout_rate: float = 0.0
  tie_embeddings: bool = True  # Output projection is the input embedding.
  scale_tied_output: bool = False  # T5 v1.0: final states x d_model**-0.5 before the tied output.
  init_std: float = 0.02
  fan_in_init: bool = False  # T5 (Mesh TF): kernels N(0, 1/fan_in), embeddings N(0, 1).
  dtype: str = 'float32'  # Compute dtype.
  param_dtype: str = 'float32'
  attention_impl: str | None = None  # None/'' auto, 'xla', 'cudnn', 'splash': attention.py.
  scan_layers: bool = False  # One nn.scan over the layers (fast compiles) instead of a loop.
  remat: str = 'none'  # Recompute in the backward pass: 'none', 'full', or 'dots' (keep matmuls).
  adapter_dim: int = 0  # Houlsby adapters of this bottleneck after every sub-layer (0: none).
  # LoRA (Hu et al. 2021): the named block projections ('query', 'key', 'value', 'out',
  # 'wi', 'wo', ...) get a low-rank update (alpha / rank) x B A, B at zero (0: none).
  lora_rank: int = 0
  lora_alpha: float = 0.0  # 0: alpha = rank (a scale of 1).
  lora_targets: tuple[str, ...] = ('query', 'value')
  # Prompt tuning (Lester et al. 2021): this many learned vectors are put before each row's
  # embeddings, in its first segment, and their outputs dropped (0: none).
  prompt_length: int = 0
  # P-tuning v2 (Liu et al. 2022) / prefix tuning (Li & Liang 2021): every self-attention
  # layer gets this many learned keys and values before the row's, seen by every real query
  # (0: none).
  prefix_length: int = 0
  # MobileBERT (Sun et al. 2020). bottleneck_dim > 0: a block projects its d_model-wide input
  # to bottleneck_dim (`bottleneck_in` + norm), runs its sub-layers that wide, and projects
  # back (`bottleneck_out`, residual from the block input, norm); post-LN only.
  bottleneck_dim: int = 0
  # With a bottleneck: queries and keys read a second bottleneck of the block input
  # (`bottleneck_qk`) and values the input itself (MobileBERT); else all read `bottleneck_in`.
  shared_qk_bottleneck: bool = False
  num_mlps: int = 1  # Feed-forward sub-layers per block, each with its residual and norm.
  # MobileBERT's embedding: the token table is token_dim wide, and each position's next, own
  # and previous token embeddings, concatenated, are projected to d_model before the
  # (d_model-wide) position and token-type embeddings are added (a width-3 convolution).
  embed_trigram: bool = False
  # Structured head pruning (models/head_pruning.py): heads kept in each layer, in layer
  # order (None: num_heads everywhere; 0: the layer's attention is its output bias alone).
  layer_heads: tuple[int, ...] | None = None

  def __post_init__(self):
    # Sequence fields read back from JSON (model.json, config.json) arrive as lists: kept
    # as tuples, so that configs compare equal and hash (jit's static arguments).
    for name in ('lora_targets', 'layer_heads', 'quant_layer_bits'):
      value = getattr(self, name)
      if isinstance(value, list):
        object.__setattr__(self, name, tuple(value))

  def heads_of(self, layer: int) -> int:
    """Attention heads of block `layer` (fewer than num_heads after head pruning)."""
    return self.num_heads if self.layer_heads is None else self.layer_heads[layer]

  # Quantization of every block matmul (a `Projection`; models/quantization.py): '' float;
  # 'fake' quantization-aware training (weights per output channel and inputs per tensor
  # rounded to quant_bits in the forward pass, straight-through gradients); 'int8' (int8
  # kernel per output channel x int8 inputs on a calibrated per-tensor scale, int32 sums);
  # 'weight' (weight-only: quant_bits-bit kernels, dequantized in the matmul).
  quant: str = ''
  quant_bits: int = 8  # Bits of 'fake' and 'weight' (2 to 8); 'int8' is 8.
  quant_group_size: int = 0  # Input rows per weight scale (0: one scale per output channel).
  quant_layer_bits: tuple[int, ...] | None = None  # Q-BERT: each layer's bits over quant_bits.

  def quant_bits_of(self, layer: int | None) -> int:
    """Weight bits of block `layer`'s matmuls (None: a block outside the layer loop)."""
    if self.quant_layer_bits is None:
      return self.quant_bits
    if layer is None or not 0 <= layer < len(self.quant_layer_bits):
      raise ValueError(
        f'quant_layer_bits={self.quant_layer_bits} gives bits per layer of a looped stack; '
        f'layer {layer} is not one of them (scan_layers and share_layers must be off).'
      )
    return self.quant_layer_bits[layer]

  @property
  def token_dim(self) -> int:
    """Width of the token embeddings (and of the tied output): E or d_model."""
    return self.embed_dim or self.d_model

  @property
  def max_positions(self) -> int:
    """Longest sequence the position table serves."""
    return self.max_len - self.position_offset

  @property
  def kv_dim(self) -> int:
    return self.head_dim or self.inner_dim // self.num_heads

  @property
  def inner_dim(self) -> int:
    """Width of a block's sub-layers and residual stream: bottleneck_dim or d_model."""
    return self.bottleneck_dim or self.d_model
