"""Output heads on top of the shared stack; each model is a `transformer.Stack` + one head.

`Backbone` is the stack as checkpoints publish it (the encoder, plus BERT's
pooler where the family has one); its size is the parameter count the papers
and `python -m models.presets` report. `MaskedLM` is BERT's head: a transform
(Dense, activation, LayerNorm; to E for factorized embeddings), then the decoder
tied to the input embedding plus an output bias. `CausalLM` is GPT's: the tied
embedding (or an untied projection) applied to the final states. `Seq2SeqLM`
is the encoder-decoder (T5, BART, MASS): one token table shared by both stacks
and the output; its size is what `count_params` reports for those families.
`SequenceClassifier` and `TokenClassifier` are the fine-tuning heads (GLUE, NER).

Every model (and auxiliary head) says what its output costs, `head_macs(seq_len,
predicted_len)`: forward multiply-adds per token of a row of `seq_len` tokens, of which
`predicted_len` reach a masked LM's vocabulary (models/flops.py counts the rest).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import dropout, flops, transformer
from models.transformer import TransformerConfig


def untied_output(cfg: TransformerConfig, name: str, in_axis: str = 'embed') -> nn.Dense:
  """A vocabulary projection of its own, for configs with tie_embeddings=False."""
  fan_in = cfg.token_dim if in_axis == 'factor' else cfg.d_model
  return nn.Dense(
    cfg.vocab_size,
    use_bias=False,
    kernel_init=transformer.normal_init(cfg, in_axis, 'vocab', fan_in=fan_in),
    dtype=cfg.compute_dtype,
    param_dtype=cfg.storage_dtype,
    name=name,
  )


class Pooler(nn.Module):
  """BERT's pooler: tanh(Dense) of the first token's final state -> [batch, embed]."""

  cfg: TransformerConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    dense = nn.Dense(
      cfg.d_model,
      kernel_init=transformer.normal_init(cfg, 'embed', 'mlp', fan_in=cfg.d_model),
      bias_init=transformer.zeros_init('mlp'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='dense',
    )
    return jnp.tanh(dense(x[:, 0]))


class Backbone(nn.Module):
  """The encoder (and pooler, if the family has one); returns (hidden, pooled or None)."""

  cfg: TransformerConfig

  def setup(self):
    self.encoder = transformer.Stack(self.cfg, name='encoder')
    if self.cfg.pooler:
      self.pooler = Pooler(self.cfg, name='pooler')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    return x, self.pooler(x) if self.cfg.pooler else None

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The pooler, once per row."""
    del predicted_len
    return flops.pooled_classifier_macs(self.cfg, 0, seq_len, pooler=bool(self.cfg.pooler))


class SentencePairHead(nn.Module):
  """BERT's NSP / ALBERT's SOP classifier: the pooler, then two logits [batch, 2]
  (class 0: B follows A, the original order; class 1: not)."""

  cfg: TransformerConfig
  TIED_OUTPUT = False  # Returns class logits, not states for the vocabulary.
  INPUTS = ()

  @nn.compact
  def __call__(self, x, batch, deterministic=True):
    del batch, deterministic  # The first token ([CLS]) of each pair row says it all.
    pooled = Pooler(self.cfg, name='pooler')(x)  # [batch, embed]
    cfg = self.cfg
    return nn.Dense(
      2,
      kernel_init=transformer.normal_init(cfg, 'embed', 'classes', fan_in=cfg.d_model),
      bias_init=transformer.zeros_init('classes'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='classifier',
    )(pooled)

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The pooler and the two logits, once per row."""
    del predicted_len
    return flops.pooled_classifier_macs(self.cfg, 2, seq_len)


class SpanBoundaryHead(nn.Module):
  """SpanBERT's span boundary objective: each masked token from the states of the two
  tokens around its span and its offset in the span, through a 2-layer GeLU +
  LayerNorm MLP (Joshi et al. 2020, eq. 1). Returns [batch, length, token_dim]
  states that MaskedLM projects onto the tied vocabulary.

  `batch` gives span_left / span_right (positions of the boundary tokens) and
  span_offset (0-based index inside the span), all [batch, length] ints.
  """

  cfg: TransformerConfig
  max_offset: int = 128  # Span offsets (in tokens) beyond this share the last embedding.
  TIED_OUTPUT = True
  INPUTS = ('span_left', 'span_right', 'span_offset')  # The batch arrays it reads.

  @nn.compact
  def __call__(self, x, batch, deterministic=True):
    del deterministic
    cfg = self.cfg
    take = jax.vmap(lambda states, index: states[index])  # [batch, length, embed]
    offsets = jnp.minimum(batch['span_offset'], self.max_offset - 1)
    offset_embed = nn.Embed(
      self.max_offset,
      cfg.d_model,
      embedding_init=transformer.normal_init(cfg, 'position', 'embed', fan_in=1),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='offset_embed',
    )(offsets)
    h = jnp.concatenate(
      [take(x, batch['span_left']), take(x, batch['span_right']), offset_embed], axis=-1
    )  # [batch, length, 3 * embed]
    act = transformer.activation_fn(cfg.activation)
    # (fan in, width, kernel axes): the concatenated states count as `embed`.
    out_axis = transformer.embed_axis(cfg)
    widths = (
      (3 * cfg.d_model, cfg.d_model, ('embed', 'mlp')),
      (cfg.d_model, cfg.token_dim, ('mlp', out_axis)),
    )
    for i, (fan_in, width, (in_axis, axis)) in enumerate(widths):
      h = nn.Dense(
        width,
        kernel_init=transformer.normal_init(cfg, in_axis, axis, fan_in=fan_in),
        bias_init=transformer.zeros_init(axis),
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        name=f'dense_{i}',
      )(h)
      h = transformer.layer_norm(cfg, f'norm_{i}', axis)(act(h))
    return h

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The MLP (3d -> d -> token_dim) and the tied vocabulary (MaskedLM projects its
    output) at every position of the row."""
    del seq_len, predicted_len
    cfg = self.cfg
    mlp = 3 * cfg.d_model * cfg.d_model + cfg.d_model * cfg.token_dim
    return mlp + flops.vocabulary_macs(cfg, mlm_transform=False)


class HiddenStates(nn.Module):
  """No parameters: the final states [batch, length, embed] themselves, for losses
  that pool them (objectives/contrastive.py)."""

  cfg: TransformerConfig
  TIED_OUTPUT = False
  INPUTS = ()

  def __call__(self, x, batch, deterministic=True):
    del batch, deterministic
    return x

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    del seq_len, predicted_len
    return 0.0


# Auxiliary heads an objective can put on MaskedLM's final states (objectives/multitask.py).
AUX_HEADS = {
  'sentence_pair': SentencePairHead,
  'span_boundary': SpanBoundaryHead,
  'hidden_states': HiddenStates,
}


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
  """x [batch, length, width] at positions [batch, P] -> [batch, P, width]."""
  return jnp.take_along_axis(x, positions[..., None], axis=1)


class MaskedLM(nn.Module):
  """BERT-style encoder with the MLM head; returns logits [batch, length, vocab].

  With `aux_heads` (names in AUX_HEADS: BERT's NSP, SpanBERT's SBO, ...) it returns
  (logits, {name: head output}), the heads reading the same final states; a head
  with TIED_OUTPUT is projected onto the tied vocabulary with a bias of its own.
  """

  cfg: TransformerConfig
  aux_heads: tuple[str, ...] = ()

  def setup(self):
    cfg = self.cfg
    self.encoder = transformer.Stack(cfg, name='encoder')
    out_axis = 'factor' if cfg.embed_dim else 'mlp'  # [embed, token_dim]
    self.transform = nn.Dense(
      cfg.token_dim,
      kernel_init=transformer.normal_init(cfg, 'embed', out_axis, fan_in=cfg.d_model),
      bias_init=transformer.zeros_init(out_axis),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='mlm_transform',
    )
    self.transform_norm = transformer.layer_norm(cfg, 'mlm_norm', transformer.embed_axis(cfg))
    self.output_bias = self.param(
      'mlm_bias', transformer.zeros_init('vocab'), (cfg.vocab_size,), cfg.storage_dtype
    )
    if not cfg.tie_embeddings:
      self.decoder = untied_output(cfg, 'mlm_decoder', transformer.embed_axis(cfg))
    unknown = set(self.aux_heads) - set(AUX_HEADS)
    if unknown:
      raise ValueError(f'Unknown auxiliary heads {sorted(unknown)}; known: {sorted(AUX_HEADS)}.')
    self.aux = {name: AUX_HEADS[name](cfg) for name in self.aux_heads}
    self.aux_bias = {
      name: self.param(
        f'{name}_bias', transformer.zeros_init('vocab'), (cfg.vocab_size,), cfg.storage_dtype
      )
      for name in self.aux_heads
      if AUX_HEADS[name].TIED_OUTPUT
    }

  def init_inputs(self, seq_len: int) -> tuple:
    """Example arguments of `init` (training/state.py), the auxiliary heads' arrays included."""
    tokens = jnp.ones((1, seq_len), jnp.int32)
    names = [name for head in self.aux_heads for name in AUX_HEADS[head].INPUTS]
    return tokens, tokens, tokens, None, True, {name: jnp.zeros_like(tokens) for name in names}

  def vocab_logits(self, h, bias):
    """Tied (or untied) output projection of [batch, length, token_dim] states, plus `bias`.

    The states are constrained to the activations' layout first (rows over the batch axes,
    width whole): left free, the transform's output keeps its kernel's 'mlp' sharding
    (tensor), and XLA's SPMD partitioner (jax 0.10.2) then miscompiles the projection's
    backward pass when few rows reach it (gathered masked positions, short rows):
    it permutes the logits' cotangent to another batch order and pairs it with the
    states in the original order, so the gradients of every layer below the
    vocabulary come out wrong (forward and output-embedding gradient right)."""
    h = nn.with_logical_constraint(h, ('batch', 'length', 'act_embed'))
    logits = self.encoder.attend(h) if self.cfg.tie_embeddings else self.decoder(h)
    logits = logits + bias.astype(logits.dtype)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab'))

  def __call__(
    self,
    tokens,
    segment_ids,
    positions=None,
    token_types=None,
    deterministic=True,
    aux_inputs=None,
    masked_positions=None,
    **encoder_kw,
  ):
    """`aux_inputs`: the batch arrays the auxiliary heads read; `masked_positions`
    [batch, P]: only these positions' states go through the MLM transform and onto the
    vocabulary (logits [batch, P, vocab]: BERT's gather of the masked positions, ~15% of
    the work at every position); `encoder_kw` go to the encoder (UniLM's attention kinds,
    objectives/unilm.py)."""
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic, **encoder_kw)
    predicted = x if masked_positions is None else gather_positions(x, masked_positions)
    h = transformer.activation_fn(self.cfg.activation)(self.transform(predicted))
    logits = self.vocab_logits(self.transform_norm(h), self.output_bias)
    if not self.aux_heads:
      return logits
    outputs = {}
    for name, head in self.aux.items():
      out = head(x, aux_inputs, deterministic)
      outputs[name] = self.vocab_logits(out, self.aux_bias[name]) if name in self.aux_bias else out
    return logits, outputs

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The MLM transform and the vocabulary at `predicted_len` of the row's `seq_len`
    positions, and every auxiliary head's own cost."""
    mlm = flops.vocabulary_macs(self.cfg, mlm_transform=True) * predicted_len / seq_len
    aux = [AUX_HEADS[name](self.cfg, parent=None) for name in self.aux_heads]  # Unbound.
    return mlm + sum(head.head_macs(seq_len, predicted_len) for head in aux)


class KnowledgeEmbeddingLM(MaskedLM):
  """MaskedLM that also embeds entities and relations (KEPLER, objectives/kepler.py): an
  entity is the encoder's [CLS] state over its description (`describe`), a relation a row
  of a table of its own (`relation`, [num_relations, embed]); the rest is MaskedLM's, so a
  BERT checkpoint loads into it and the relation table starts fresh."""

  num_relations: int = 1

  def setup(self):
    super().setup()
    self.relations = self.param(
      'relations', transformer.normal_init(self.cfg, 'classes', 'embed', fan_in=1),
      (self.num_relations, self.cfg.d_model), self.cfg.storage_dtype,
    )  # fmt: skip

  def describe(self, tokens, segment_ids, deterministic=True):
    """[n, embed]: the final [CLS] state of each description row [n, length]."""
    return self.encoder(tokens, segment_ids, None, None, deterministic)[:, 0]

  def relation(self, ids):
    """[n, embed] relation vectors of [n] ids."""
    return jnp.asarray(self.relations, self.cfg.compute_dtype)[ids]


class CausalLM(nn.Module):
  """GPT-style decoder-only model; returns next-token logits [batch, length, vocab]."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    if not cfg.causal:
      raise ValueError('CausalLM needs a causal TransformerConfig (causal=True).')
    self.decoder = transformer.Stack(cfg, name='decoder')
    if not cfg.tie_embeddings:
      self.lm_head = untied_output(cfg, 'lm_head')

  def __call__(
    self, tokens, segment_ids, positions=None, token_types=None, deterministic=True
  ) -> jax.Array:
    x = self.decoder(tokens, segment_ids, positions, token_types, deterministic)
    logits = self.decoder.attend(x) if self.cfg.tie_embeddings else self.lm_head(x)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab'))

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The vocabulary at every position."""
    del seq_len, predicted_len
    return flops.vocabulary_macs(self.cfg, mlm_transform=False)


class Seq2SeqLM(nn.Module):
  """Encoder-decoder over one shared token embedding; returns decoder logits
  [batch, dec_length, vocab]."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    if not cfg.num_decoder_layers:
      raise ValueError('Seq2SeqLM needs num_decoder_layers > 0 (an encoder-decoder preset).')
    self.shared = nn.Embed(
      cfg.vocab_size,
      cfg.d_model,
      embedding_init=transformer.normal_init(cfg, 'vocab', 'embed', fan_in=1),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='shared',
    )
    self.encoder = transformer.Stack(cfg, shared_token=self.shared, name='encoder')
    self.decoder = transformer.Stack(cfg, is_decoder=True, shared_token=self.shared, name='decoder')
    if not cfg.tie_embeddings:
      self.lm_head = untied_output(cfg, 'lm_head')

  def init_inputs(self, seq_len: int) -> tuple:
    """Example arguments of `init` (training/state.py): encoder and decoder rows."""
    tokens = jnp.ones((1, seq_len), jnp.int32)
    return (tokens,) * 6

  def encode(self, tokens, segment_ids, positions=None, deterministic=True):
    """Encoder states [batch, enc_length, embed]."""
    return self.encoder(tokens, segment_ids, positions, deterministic=deterministic)

  def decode(
    self, encoded, encoder_segment_ids, tokens, segment_ids, positions=None, deterministic=True
  ):
    """Decoder logits [batch, dec_length, vocab] given the encoder states."""
    cfg = self.cfg
    x = self.decoder(
      tokens,
      segment_ids,
      positions,
      deterministic=deterministic,
      encoded=encoded,
      encoder_segment_ids=encoder_segment_ids,
    )
    if cfg.tie_embeddings:
      if cfg.scale_tied_output:  # T5 v1.0 rescales before the tied output.
        x = x * cfg.d_model**-0.5
      logits = self.shared.attend(x)
    else:
      logits = self.lm_head(x)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'act_vocab'))

  def __call__(
    self,
    inputs,
    segment_ids,
    positions,
    decoder_inputs,
    decoder_segment_ids,
    decoder_positions,
    deterministic=True,
  ) -> jax.Array:
    encoded = self.encode(inputs, segment_ids, positions, deterministic)
    return self.decode(
      encoded, segment_ids, decoder_inputs, decoder_segment_ids, decoder_positions, deterministic
    )

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The vocabulary at every decoder position (per decoder token)."""
    del seq_len, predicted_len
    return flops.vocabulary_macs(self.cfg, mlm_transform=False)


def classes_dense(cfg: TransformerConfig, num_labels: int, name: str) -> nn.Dense:
  """A task output layer: [.., embed] -> [.., num_labels], N(0, init_std) kernel, zero bias."""
  return nn.Dense(
    num_labels,
    kernel_init=transformer.normal_init(cfg, 'embed', 'classes', fan_in=cfg.d_model),
    bias_init=transformer.zeros_init('classes'),
    dtype=cfg.compute_dtype,
    param_dtype=cfg.storage_dtype,
    name=name,
  )


class SequenceClassifier(nn.Module):
  """Fine-tuning head for a sentence (pair): the encoder, BERT's pooler over the first
  token ([CLS]), dropout and a linear layer -> [batch, num_labels] logits; one label
  is a regression output (STS-B). The `encoder` and `pooler` subtrees have
  Backbone's names and shapes, so a pretrained backbone loads into them as it is."""

  cfg: TransformerConfig
  num_labels: int

  def setup(self):
    self.encoder = transformer.Stack(self.cfg, name='encoder')
    self.pooler = Pooler(self.cfg, name='pooler')
    self.dropout = dropout.Dropout(self.cfg.dropout_rate)
    self.classifier = classes_dense(self.cfg, self.num_labels, 'classifier')

  def __call__(
    self, tokens, segment_ids, positions=None, token_types=None, deterministic=True, visible=None
  ):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic, visible=visible)
    pooled = self.dropout(self.pooler(x), deterministic=deterministic)  # [batch, embed]
    return self.classifier(pooled).astype(jnp.float32)  # [batch, num_labels]

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The pooler and the classifier, once per row."""
    del predicted_len
    return flops.pooled_classifier_macs(self.cfg, self.num_labels, seq_len)


class KnowledgeClassifier(SequenceClassifier):
  """SequenceClassifier over a knowledge-injected row (K-BERT, data/knowledge.py): the
  batch's `visible` [batch, length, length] matrix masks the encoder's attention, and its
  positions are the sentence tree's soft positions. The same parameters as
  SequenceClassifier: a BERT checkpoint loads into it, and it into SequenceClassifier."""

  EXTRA_INPUTS = ('visible',)  # Batch arrays passed by name (objectives/shared/task_inputs).


class TokenClassifier(nn.Module):
  """Fine-tuning head for tagging (NER): the encoder, dropout and a linear layer per
  token -> [batch, length, num_labels] logits (BERT's recipe labels first sub-tokens)."""

  cfg: TransformerConfig
  num_labels: int

  def setup(self):
    self.encoder = transformer.Stack(self.cfg, name='encoder')
    self.dropout = dropout.Dropout(self.cfg.dropout_rate)
    self.classifier = classes_dense(self.cfg, self.num_labels, 'classifier')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    x = self.dropout(x, deterministic=deterministic)
    return self.classifier(x).astype(jnp.float32)  # [batch, length, num_labels]

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The tags at every position."""
    del seq_len, predicted_len
    return self.cfg.d_model * self.num_labels


class SpanExtractor(nn.Module):
  """Fine-tuning head for extractive QA (SQuAD, as BERT's run_squad.py): the encoder, then
  one linear layer per token to two logits -> start and end logits, each [batch, length].
  The `encoder` subtree has Backbone's names, so a pretrained backbone loads into it."""

  cfg: TransformerConfig

  def setup(self):
    self.encoder = transformer.Stack(self.cfg, name='encoder')
    self.qa_outputs = classes_dense(self.cfg, 2, 'qa_outputs')

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    logits = self.qa_outputs(x).astype(jnp.float32)  # [batch, length, 2]
    return logits[..., 0], logits[..., 1]

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """A start and an end logit at every position."""
    del seq_len, predicted_len
    return self.cfg.d_model * 2


class SpanMatcher(SpanExtractor):
  """SpanExtractor plus Li et al. 2020's span-matching classifier: a match logit for every
  (start i, end j) pair from a two-layer MLP over [E_i; E_j] (their code's non-linear
  classifier; the paper writes one linear layer, which would score i and j apart):
  m_ij = w . GELU(A E_i + B E_j + b) + c, width `match_dim`. Returns (start [batch,
  length], end [batch, length], match [batch, length, length]) logits; the `encoder` and
  `qa_outputs` are SpanExtractor's, so a SQuAD or NER-as-MRC run loads into it."""

  match_dim: int = 128

  def setup(self):
    super().setup()
    cfg = self.cfg
    self.match_start = nn.Dense(
      self.match_dim, use_bias=False, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
      kernel_init=transformer.normal_init(cfg, 'embed', 'mlp', fan_in=2 * cfg.d_model),
      name='match_start',
    )  # fmt: skip
    self.match_end = nn.Dense(
      self.match_dim, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
      kernel_init=transformer.normal_init(cfg, 'embed', 'mlp', fan_in=2 * cfg.d_model),
      bias_init=transformer.zeros_init('mlp'), name='match_end',
    )  # fmt: skip
    self.match_out = nn.Dense(
      1, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
      kernel_init=transformer.normal_init(cfg, 'mlp', 'classes', fan_in=self.match_dim),
      bias_init=transformer.zeros_init('classes'), name='match_out',
    )  # fmt: skip

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    logits = self.qa_outputs(x).astype(jnp.float32)  # [batch, length, 2]
    a, b = self.match_start(x), self.match_end(x)  # [batch, length, match_dim]
    hidden = nn.gelu(a[:, :, None, :] + b[:, None, :, :])  # [batch, start, end, match_dim]
    match = self.match_out(hidden)[..., 0].astype(jnp.float32)  # [batch, start, end]
    return logits[..., 0], logits[..., 1], match

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """SpanExtractor's, the two match_dim projections at every position and the match
    logit of each of a start's `seq_len` pairs."""
    projections = 2 * self.cfg.d_model * self.match_dim + seq_len * self.match_dim
    return super().head_macs(seq_len, predicted_len) + projections
