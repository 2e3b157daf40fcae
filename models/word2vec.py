"""word2vec (Mikolov et al. 2013): skip-gram and CBOW with negative sampling.

Two tables of `d_model`-wide vectors: `input` (the word vectors one keeps) and
`output` (the vectors a word is predicted with). The model scores (word,
predicted word) pairs by a dot product; which pairs, and their noise words, are
drawn on the host by objectives/word2vec.py:

  skip-gram: each center word's input vector scores each word of its context
    window (`contexts`), and K noise words per such pair;
  CBOW: the mean input vector of the context window scores the center word,
    and K noise words.

Parameters carry the logical axes ('vocab', 'embed').
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.model_config import ModelConfig

MODES = ('skipgram', 'cbow')


@dataclasses.dataclass(frozen=True)
class Word2VecConfig(ModelConfig):
  """Shape of a word2vec model; presets fill it in."""

  vocab_size: int
  d_model: int = 300  # Vector width.
  mode: str = 'skipgram'  # 'skipgram' or 'cbow'.
  # The paper's window and negatives, for the FLOPs estimate only: the data side
  # draws with objective.window and objective.negatives (configs/cpu/word2vec.py).
  window: int = 5
  negatives: int = 5
  num_layers: int = 1  # One embedding layer (the trainer's log prints it).
  dtype: str = 'float32'  # Compute dtype.
  param_dtype: str = 'float32'

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'word2vec mode={self.mode!r} must be one of {MODES}.')

  def count_params(self) -> int:
    """2 x vocab x d_model: the input and output vectors (only the input ones are released)."""
    model = Word2Vec(self)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.init_inputs(8)))
    return sum(x.size for x in jax.tree.leaves(shapes))

  def train_flops_per_token(self, seq_len: int) -> float:
    """Forward + backward FLOPs per row token: 6 x d_model per scored pair.

    A dot product of two d-vectors is d multiply-adds forward and 2d backward
    (one gradient per side). Skip-gram scores (1 + negatives) pairs for each of
    a center's 2 x E[b] = window + 1 context words (b uniform on 1..window);
    CBOW scores (1 + negatives) pairs per center (its context average is not a
    matmul and not counted). Counted at this config's window and negatives, for
    every token of the row, before subsampling and ignoring windows cut by a
    segment's edge: an upper bound. `seq_len` does not matter.
    """
    del seq_len
    per_center = (1 + self.negatives) * (self.window + 1 if self.mode == 'skipgram' else 1)
    return 6.0 * self.d_model * per_center


# The config class of this family's presets (models/presets.py reads CONFIG and PRESETS).
CONFIG = Word2VecConfig


PRESETS: dict[str, dict] = {
  # Mikolov et al. 2013b: 300-wide vectors, 5 negatives from unigram^0.75, window 5,
  # subsampling 1e-5 (the objective's keys); the released GoogleNews vectors cover
  # 3M words and phrases. Training holds 2 x 3M x 300 = 1.8B parameters.
  'word2vec-skipgram': dict(vocab_size=3_000_000, d_model=300, mode='skipgram'),
  # CBOW (Mikolov et al. 2013a) with the same sampling settings.
  'word2vec-cbow': dict(vocab_size=3_000_000, d_model=300, mode='cbow'),
}


def _input_init(key, shape, dtype=jnp.float32):
  """word2vec.c's input vectors: uniform in [-0.5 / d, 0.5 / d)."""
  return (jax.random.uniform(key, shape, dtype) - 0.5) / shape[-1]


class Word2Vec(nn.Module):
  """Scores of the positive pairs and of their noise words (see the module docstring)."""

  cfg: Word2VecConfig

  @nn.compact
  def __call__(self, inputs, contexts, context_weights, negatives):
    """Pair scores (logits of the logistic loss).

    Args:
      inputs: [batch, length] center word ids.
      contexts: [batch, length, slots] ids of each center's context words.
      context_weights: [batch, length, slots] 1 where a context slot holds a word.
      negatives: [batch, length, slots, K] noise ids, one set per (center, slot);
        CBOW makes one prediction per center and uses slot 0's.

    Returns:
      (positive, negative) scores: skip-gram [batch, length, slots] and
      [batch, length, slots, K]; CBOW [batch, length] and [batch, length, K].
    """
    cfg = self.cfg
    shape = (cfg.vocab_size, cfg.d_model)
    names = ('vocab', 'embed')
    init = nn.with_logical_partitioning(_input_init, names)
    input_table = self.param('input', init, shape, cfg.storage_dtype)
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), names)
    output_table = self.param('output', init, shape, cfg.storage_dtype)
    input_table = input_table.astype(cfg.compute_dtype)
    output_table = output_table.astype(cfg.compute_dtype)
    if cfg.mode == 'skipgram':
      center = input_table[inputs]  # [batch, length, embed]
      positive = jnp.einsum('bld,blsd->bls', center, output_table[contexts])
      negative = jnp.einsum('bld,blskd->blsk', center, output_table[negatives])
      return positive, negative
    weights = context_weights.astype(cfg.compute_dtype)  # [batch, length, slots]
    summed = jnp.einsum('bls,blsd->bld', weights, input_table[contexts])
    mean = summed / jnp.maximum(weights.sum(-1), 1)[..., None]  # [batch, length, embed]
    positive = jnp.einsum('bld,bld->bl', mean, output_table[inputs])
    negative = jnp.einsum('bld,blkd->blk', mean, output_table[negatives[:, :, 0]])
    return positive, negative

  @nn.nowrap
  def init_inputs(self, seq_len: int) -> tuple:
    """Example (inputs, contexts, context_weights, negatives) for `init`."""
    ids = jnp.ones((1, seq_len), jnp.int32)
    pairs = jnp.ones((1, seq_len, 2), jnp.int32)
    return ids, pairs, pairs, jnp.ones((1, seq_len, 2, 1), jnp.int32)

  def vectors(self) -> jax.Array:
    """The word vectors [vocab, embed] (the input table), e.g. for analogy tests."""
    return self.variables['params']['input']
