"""ELMo (Peters et al. 2018): a character CNN and a bidirectional LSTM language model.

Tokens are read as characters. `char_table` turns every piece of the tokenizer
into a row of character ids once (its UTF-8 bytes between begin- and end-of-word
markers); the objective looks the rows up on the host (objectives/elmo_lm.py),
so the model sees `chars` [batch, length, chars]. A CNN max-pooled over the
characters, highway layers and a linear projection give a context-free token
vector. Two stacks of LSTMs with projections read those vectors, one left to
right (predicting the next token), one right to left (predicting the previous
one), with a residual connection between layers. Both directions share the
token encoder and one softmax layer, which is separate from the input (the
paper's tying is across directions, not between input and output; the paper
trained it as a sampled softmax, here it is the full softmax over the vocabulary).

Packing: a row holds several documents (`segment_ids` 1..k, 0 for padding).
Each direction resets its LSTM state where a segment starts in its reading
order, so neither direction ever reads across a document boundary.

Downstream tasks: `ElmoLM.layer_representations` (or `BiLM`) returns the layers
[num_layers + 1, batch, length, 2 * d_model] (layer 0 is the token vector twice,
then each biLSTM layer's forward and backward states side by side) and
`ScalarMix` combines them as gamma * sum_j softmax(s)_j * layer_j (eq. 1).

Parameters carry the logical axes `embed`, `mlp` (the CNN filters and LSTM
cells) and `vocab`, plus four that only this file uses and that every rule set
leaves unsharded: `char_vocab`, `char_embed`, `conv_width` and `layers`.
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import dropout
from models.model_config import ModelConfig

# Character ids (AllenNLP's ELMoCharacterMapper, shifted by one so 0 is a padding token):
# byte b is b + 1, then markers for the sentence's BOS / EOS tokens, word boundaries,
# and the padding after a word's last character.
BOS_CHAR, EOS_CHAR, BEGIN_WORD, END_WORD, CHAR_PAD = 257, 258, 259, 260, 261
CHAR_VOCAB_SIZE = 262
MAX_CHARS = 50  # Characters per token in the paper, markers included.

# Peters et al. 2018 / AllenNLP's "Original" model: 2048 filters of widths 1..7.
_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))


@dataclasses.dataclass(frozen=True)
class ElmoConfig(ModelConfig):
  """Shape of an ELMo biLM; presets fill it in."""

  vocab_size: int  # Softmax vocabulary (the inputs are characters).
  num_layers: int = 2  # biLSTM layers.
  d_model: int = 512  # Token vector width and the LSTMs' projection width.
  lstm_dim: int = 4096  # LSTM cells per layer and direction.
  filters: tuple[tuple[int, int], ...] = _FILTERS  # (width, count) of each char convolution.
  num_highway: int = 2  # Highway layers after the CNN.
  char_embed_dim: int = 16
  char_vocab_size: int = CHAR_VOCAB_SIZE
  max_chars: int = MAX_CHARS  # Longest character row (init shapes and the FLOPs estimate).
  cell_clip: float = 3.0  # LSTM cell values clipped to [-clip, clip]; 0 disables.
  proj_clip: float = 3.0  # LSTM projected outputs clipped likewise.
  residual: bool = True  # Residual connection around every LSTM layer but the first.
  dropout_rate: float = 0.1  # On each LSTM layer's input and on the top layer's output.
  dtype: str = 'float32'  # Compute dtype.
  param_dtype: str = 'float32'

  @property
  def num_filters(self) -> int:
    return sum(count for _, count in self.filters)

  def count_params(self) -> int:
    """Parameters of the biLM as released: the character encoder and the LSTMs.

    The softmax (d_model x vocab + bias) is a pretraining head and is not counted,
    as in the paper's 93.6M; neither is a downstream task's ScalarMix.
    """
    model = BiLM(self)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.init_inputs(8)))
    return sum(x.size for x in jax.tree.leaves(shapes))

  def train_flops_per_token(self, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6 x the multiply-adds of one token's forward pass.

    Counted: every convolution at each of its (max_chars - width + 1) positions
    (a token row is `max_chars` wide at most: an upper bound when the tokenizer's
    pieces are shorter), the highway layers, the projection, both directions'
    LSTMs (input, recurrent and projection matrices) and the softmax, which both
    directions apply. Not counted: embedding lookups, gate nonlinearities, the
    max-pool. There is no attention, so `seq_len` does not matter.
    """
    del seq_len
    d, f = self.d_model, self.num_filters
    conv = sum((self.max_chars - w + 1) * w * self.char_embed_dim * n for w, n in self.filters)
    highway = self.num_highway * 2 * f * f
    lstm = 2 * self.num_layers * (2 * d * 4 * self.lstm_dim + self.lstm_dim * d)
    softmax = 2 * d * self.vocab_size
    return 6.0 * (conv + highway + f * d + lstm + softmax)


# The config class of this family's presets (models/presets.py reads CONFIG and PRESETS).
CONFIG = ElmoConfig


def _elmo(layers, d_model, lstm_dim, num_highway, **kw) -> dict:
  return dict(
    vocab_size=793471,  # The 1B Word Benchmark vocabulary of the released softmax.
    num_layers=layers,
    d_model=d_model,
    lstm_dim=lstm_dim,
    num_highway=num_highway,
    **kw,
  )


PRESETS: dict[str, dict] = {
  # Peters et al. 2018, the "Original" model: 93,600,864 parameters counted here
  # (char CNN, 2 highway layers, projection, two 2-layer LSTM stacks), the published
  # 93.6M, which also leaves out the softmax (512 x 793471 + bias = 407M).
  'elmo': _elmo(2, 512, 4096, 2),
  # AllenNLP's smaller releases (same CNN, one highway layer): 28.0M and 13.6M.
  'elmo-medium': _elmo(2, 256, 2048, 1),
  'elmo-small': _elmo(2, 128, 1024, 1),
  # A few seconds per step on a laptop CPU: tests and configs/cpu/elmo.py.
  'elmo-tiny': _elmo(2, 64, 256, 1, filters=((1, 16), (2, 16), (3, 32), (4, 64))),
}


def char_table(tokenizer, max_chars: int = MAX_CHARS) -> np.ndarray:
  """Character ids of every piece of `tokenizer`, computed once on the host.

  A row is [BEGIN_WORD, byte + 1, ..., END_WORD, CHAR_PAD, ...]: the piece's UTF-8
  bytes (SentencePiece's word-start mark '▁' read as a space, so a word-initial
  piece differs from a word-internal one), truncated to `max_chars - 2`. BOS and
  EOS are [BEGIN_WORD, BOS_CHAR / EOS_CHAR, END_WORD]; the padding id is all 0.

  Args:
    tokenizer: data/tokenizers.py Tokenizer (vocab_size, id_to_piece, special ids).
    max_chars: the longest row, markers included.

  Returns:
    int32 [vocab_size, width], width = min(max_chars, longest piece + 2): no wider
    than the vocabulary needs (the model pads it to its widest filter).
  """
  pieces = []
  for i in range(tokenizer.vocab_size):
    if i == tokenizer.pad_id:
      pieces.append([])  # Overwritten with zeros below.
    elif i == tokenizer.bos_id:
      pieces.append([BOS_CHAR])
    elif i == tokenizer.eos_id:
      pieces.append([EOS_CHAR])
    else:
      raw = tokenizer.id_to_piece(i).replace('\u2581', ' ').encode('utf-8')
      pieces.append([b + 1 for b in raw[: max_chars - 2]])
  width = min(max_chars, 2 + max(len(p) for p in pieces))
  table = np.full((tokenizer.vocab_size, width), CHAR_PAD, np.int32)
  for i, chars in enumerate(pieces):
    table[i, : len(chars) + 2] = [BEGIN_WORD, *chars, END_WORD]
  table[tokenizer.pad_id] = 0
  return table


def _init(init, *names: str):
  return nn.with_logical_partitioning(init, names)


_fan_in = functools.partial(_init, nn.initializers.lecun_normal())
_zeros = functools.partial(_init, nn.initializers.zeros_init())


def _dense(cfg: ElmoConfig, features: int, names: tuple[str, str], name: str, **kw) -> nn.Dense:
  return nn.Dense(
    features,
    kernel_init=kw.pop('kernel_init', _fan_in(*names)),
    bias_init=kw.pop('bias_init', _zeros(names[1])),
    dtype=cfg.compute_dtype,
    param_dtype=cfg.storage_dtype,
    name=name,
  )


class Highway(nn.Module):
  """y = g * relu(W_t x + b_t) + (1 - g) * x, g = sigmoid(W_g x + b_g) (Srivastava et al.)."""

  cfg: ElmoConfig

  @nn.compact
  def __call__(self, x):  # [tokens, filters]
    cfg, f = self.cfg, self.cfg.num_filters
    transform = nn.relu(_dense(cfg, f, ('embed', 'mlp'), 'transform')(x))
    # A gate bias of -2 starts each layer close to the identity, as in bilm-tf.
    gate_bias = _init(nn.initializers.constant(-2.0), 'mlp')
    gate = nn.sigmoid(_dense(cfg, f, ('embed', 'mlp'), 'gate', bias_init=gate_bias)(x))
    return gate * transform + (1.0 - gate) * x


class CharEncoder(nn.Module):
  """Characters [batch, length, chars] -> context-free token vectors [batch, length, embed]."""

  cfg: ElmoConfig

  @nn.compact
  def __call__(self, chars):
    cfg = self.cfg
    widest = max(width for width, _ in cfg.filters)
    if chars.shape[-1] < widest:  # Every convolution needs at least one full window.
      pad = ((0, 0), (0, 0), (0, widest - chars.shape[-1]))
      chars = jnp.pad(chars, pad, constant_values=CHAR_PAD)
    batch, length, width = chars.shape
    embed = nn.Embed(
      cfg.char_vocab_size,
      cfg.char_embed_dim,
      embedding_init=_init(nn.initializers.normal(1.0), 'char_vocab', 'char_embed'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='char_embed',
    )
    x = embed(chars.reshape(batch * length, width))  # [tokens, chars, char_embed]
    pooled = []
    for i, (filter_width, count) in enumerate(cfg.filters):
      conv = nn.Conv(
        count,
        (filter_width,),
        padding='VALID',
        kernel_init=_fan_in('conv_width', 'char_embed', 'mlp'),
        bias_init=_zeros('mlp'),
        dtype=cfg.compute_dtype,
        param_dtype=cfg.storage_dtype,
        name=f'conv_{i}',
      )
      pooled.append(jnp.max(conv(x), axis=1))  # [tokens, count]: max over positions.
    h = nn.relu(jnp.concatenate(pooled, axis=-1))  # [tokens, filters]
    for i in range(cfg.num_highway):
      h = Highway(cfg, name=f'highway_{i}')(h)
    h = _dense(cfg, cfg.d_model, ('mlp', 'embed'), 'projection')(h)
    return nn.with_logical_constraint(
      h.reshape(batch, length, cfg.d_model), ('batch', 'length', 'act_embed')
    )


def _matmul(x, kernel, dtype):
  """x @ kernel in the compute dtype, accumulated and returned in float32."""
  return jnp.dot(x.astype(dtype), kernel.astype(dtype), preferred_element_type=jnp.float32)


class LstmStep(nn.Module):
  """One time step of an LSTM with a projection and clipping (bilm-tf's LSTMCell).

  The input half of the gates is computed for the whole sequence beforehand (one
  large matmul instead of one per step); the step adds the recurrent half. The
  carry (cell [batch, lstm], projected state [batch, embed]) is zeroed first
  where `reset` is set: the first step of a segment in the reading direction.
  """

  cfg: ElmoConfig

  @nn.compact
  def __call__(self, carry, inputs):
    cfg = self.cfg
    input_gates, reset = inputs  # [batch, 4 * lstm] float32, [batch] bool
    cell, state = (jnp.where(reset[:, None], 0.0, c) for c in carry)
    shape = (cfg.d_model, 4 * cfg.lstm_dim)
    recurrent = self.param('recurrent', _fan_in('embed', 'mlp'), shape, cfg.storage_dtype)
    shape = (cfg.lstm_dim, cfg.d_model)
    projection = self.param('projection', _fan_in('mlp', 'embed'), shape, cfg.storage_dtype)
    gates = input_gates + _matmul(state, recurrent, cfg.compute_dtype)  # [batch, 4 * lstm]
    # Gates are interleaved per cell, [lstm, 4] (TF's layout is [4, lstm]): a tensor-
    # parallel shard of the 'mlp' axis then holds whole cells, and no step communicates
    # before the projection.
    i, j, f, o = jnp.moveaxis(gates.reshape(*gates.shape[:-1], cfg.lstm_dim, 4), -1, 0)
    cell = nn.sigmoid(f + 1.0) * cell + nn.sigmoid(i) * jnp.tanh(j)  # TF's forget bias of 1.
    if cfg.cell_clip:
      cell = jnp.clip(cell, -cfg.cell_clip, cfg.cell_clip)
    state = _matmul(nn.sigmoid(o) * jnp.tanh(cell), projection, cfg.compute_dtype)
    if cfg.proj_clip:
      state = jnp.clip(state, -cfg.proj_clip, cfg.proj_clip)
    return (cell, state), state


class BiStep(nn.Module):
  """One time step of both directions: the forward LSTM at t, the backward one at T - 1 - t."""

  cfg: ElmoConfig

  @nn.compact
  def __call__(self, carry, inputs):
    forward, backward = carry
    forward, forward_state = LstmStep(self.cfg, name='forward')(forward, inputs[0])
    backward, backward_state = LstmStep(self.cfg, name='backward')(backward, inputs[1])
    return (forward, backward), (forward_state, backward_state)


class BiLstmLayer(nn.Module):
  """One layer of the forward and of the backward LSTM over packed rows.

  Each direction restarts at every segment: the forward LSTM where a segment
  starts, the backward one where it ends. flax's `nn.RNN` takes one array input
  and, with `seq_lengths`, one sequence per row; packed rows need a reset flag
  per step, so this scans the steps with `nn.scan` (what `nn.RNN` uses inside)
  over (input gates, reset) pairs. Both directions share one scan (the backward
  one over the time-reversed row): half the sequential steps of two scans.
  """

  cfg: ElmoConfig

  @nn.compact
  def __call__(self, forward, backward, segment_ids):
    """Args: the directions' inputs [batch, length, embed] and segment_ids [batch, length].

    Returns:
      (forward states, backward states), each [batch, length, embed] in row order.
    """
    cfg = self.cfg
    prev = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    nxt = jnp.pad(segment_ids[:, 1:], ((0, 0), (0, 1)), constant_values=-1)
    starts, ends = segment_ids != prev, segment_ids != nxt  # [batch, length]

    def input_gates(x, name):  # The input half of the gates, for every step at once.
      gates = _dense(cfg, 4 * cfg.lstm_dim, ('embed', 'mlp'), name)(x)
      gates = nn.with_logical_constraint(gates, ('batch', 'length', 'act_mlp'))
      return gates.astype(jnp.float32)  # [batch, length, 4 * lstm]

    flip = lambda x: jnp.flip(x, axis=1)  # noqa: E731
    inputs = (
      (input_gates(forward, 'forward_input'), starts),
      (flip(input_gates(backward, 'backward_input')), flip(ends)),
    )
    scan = nn.scan(
      BiStep, variable_broadcast='params', split_rngs={'params': False}, in_axes=1, out_axes=1
    )
    batch = segment_ids.shape[0]
    zeros = (jnp.zeros((batch, cfg.lstm_dim)), jnp.zeros((batch, cfg.d_model)))
    _, (forward, backward) = scan(cfg, name='cells')((zeros, zeros), inputs)
    axes = ('batch', 'length', 'act_embed')
    return tuple(
      nn.with_logical_constraint(x.astype(cfg.compute_dtype), axes)
      for x in (forward, flip(backward))
    )


def _init_inputs(cfg: ElmoConfig, seq_len: int) -> tuple:
  """Example (chars, segment_ids) for `init`; the parameters do not depend on their shape."""
  return jnp.ones((1, seq_len, cfg.max_chars), jnp.int32), jnp.ones((1, seq_len), jnp.int32)


class BiLM(nn.Module):
  """The released ELMo biLM: characters -> layer representations (no softmax)."""

  cfg: ElmoConfig

  def setup(self):
    cfg = self.cfg
    self.char_encoder = CharEncoder(cfg)
    self.layers = [BiLstmLayer(cfg, name=f'lstm_{i}') for i in range(cfg.num_layers)]
    self.dropout = dropout.Dropout(cfg.dropout_rate)

  def __call__(self, chars, segment_ids, deterministic: bool = True):
    """Layer representations [num_layers + 1, batch, length, 2 * embed].

    Args:
      chars: [batch, length, chars] int character ids (`char_table` rows).
      segment_ids: [batch, length]: 0 for padding, 1..k for the packed documents.
      deterministic: no dropout when True.
    """
    token = self.char_encoder(chars)  # [batch, length, embed]
    layers = [jnp.concatenate([token, token], axis=-1)]
    forward = backward = token
    for i, layer in enumerate(self.layers):
      drop = functools.partial(self.dropout, deterministic=deterministic)
      new_forward, new_backward = layer(drop(forward), drop(backward), segment_ids)
      if self.cfg.residual and i > 0:
        new_forward, new_backward = new_forward + forward, new_backward + backward
      forward, backward = new_forward, new_backward
      layers.append(jnp.concatenate([forward, backward], axis=-1))
    return jnp.stack(layers)

  @nn.nowrap
  def init_inputs(self, seq_len: int) -> tuple:
    return _init_inputs(self.cfg, seq_len)


class ElmoLM(nn.Module):
  """The biLM with its softmax: (forward logits, backward logits), each [batch, length, vocab].

  Forward logits at position t predict token t + 1, backward ones token t - 1.
  """

  cfg: ElmoConfig

  def setup(self):
    cfg = self.cfg
    self.bilm = BiLM(cfg)
    self.softmax = _dense(
      cfg,
      cfg.vocab_size,
      ('embed', 'vocab'),
      'softmax',
      kernel_init=_init(nn.initializers.normal(1.0 / math.sqrt(cfg.d_model)), 'embed', 'vocab'),
    )
    self.dropout = dropout.Dropout(cfg.dropout_rate)

  def __call__(self, chars, segment_ids, deterministic: bool = True):
    top = self.bilm(chars, segment_ids, deterministic)[-1]  # [batch, length, 2 * embed]
    top = self.dropout(top, deterministic=deterministic)
    forward, backward = jnp.split(top, 2, axis=-1)
    return self.softmax(forward), self.softmax(backward)

  def layer_representations(self, chars, segment_ids, deterministic: bool = True):
    """[num_layers + 1, batch, length, 2 * embed]: what a downstream task mixes."""
    return self.bilm(chars, segment_ids, deterministic)

  @nn.nowrap
  def init_inputs(self, seq_len: int) -> tuple:
    return _init_inputs(self.cfg, seq_len)


class ScalarMix(nn.Module):
  """ELMo's task-specific combination of layers: gamma * sum_j softmax(s)_j * layer_j.

  `s` starts at zero (an even average) and gamma at one, as in AllenNLP.
  """

  num_layers: int  # Representations mixed: the biLM's num_layers + 1.
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, layers):  # [num_layers, ..., dim]
    if layers.shape[0] != self.num_layers:
      raise ValueError(f'ScalarMix of {self.num_layers} layers got {layers.shape[0]}.')
    shape = (self.num_layers,)
    scalars = self.param('scalar_weights', _zeros('layers'), shape, self.param_dtype)
    gamma = self.param('gamma', _init(nn.initializers.ones_init()), (), self.param_dtype)
    weights = jax.nn.softmax(scalars.astype(jnp.float32))  # [num_layers]
    return gamma * jnp.tensordot(weights, layers.astype(jnp.float32), axes=1)
