"""ELECTRA (Clark et al. 2020): an MLM generator and a replaced-token discriminator.

Both networks are the shared stack (models/transformer.py). The generator is
models/heads.MaskedLM at a fraction of the discriminator's width (same depth);
the discriminator is the encoder with ELECTRA's `discriminator_predictions`
head, Dense(d_model) + activation + Dense(1), one logit per token ("replaced?").

As in ELECTRA's released code, the two share the whole embedding block: token,
position and token-type tables and the embedding LayerNorm, all E wide. Each
network keeps its own projection from E to its width. The shared block lives in
the discriminator; the generator borrows it at every call (`nn.map_variables`),
so it is one set of parameter leaves and both losses' gradients add up there.

Parameter layout of `ElectraPretraining`:

  discriminator/                      the ELECTRA model that is exported / fine-tuned
    encoder/embed/{token, position, token_type, norm, project}
    encoder/block_0 ... (or blocks, with scan_layers)
    rtd_dense/{kernel, bias}          [embed, mlp]: d_model -> d_model
    rtd_logit/{kernel, bias}          [mlp, 1]
  generator/
    encoder/embed/project             E -> generator width (absent when they are equal)
    encoder/block_0 ...
    mlm_transform, mlm_norm, mlm_bias heads.MaskedLM's head, tied to the shared token table

`Discriminator(cfg).apply({'params': params['discriminator']}, ...)` runs the
discriminator alone. Sampling from the generator happens in the objective's jitted
loss (objectives/electra.py), not here.
"""

import dataclasses

import flax.linen as nn

from models import flops, heads, transformer
from models.transformer import TransformerConfig


def generator_config(cfg: TransformerConfig, fraction: float) -> TransformerConfig:
  """The generator of discriminator `cfg`: width, heads and MLP times `fraction`, same depth.

  Its embeddings are the discriminator's (E = `cfg.token_dim` wide), projected to the
  generator's width; ELECTRA-small at 1/4 gives the released 64-wide, 1-head, 256-MLP
  generator (models/presets.py 'electra-small-generator').
  """
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'objective.generator_fraction={fraction} must be in (0, 1].')
  d_model = round(cfg.d_model * fraction)
  num_heads = max(1, round(cfg.num_heads * fraction))
  mlp_dim = round(cfg.mlp_dim * fraction)
  if min(d_model, mlp_dim) < 1 or (cfg.head_dim is None and d_model % num_heads):
    raise ValueError(
      f'objective.generator_fraction={fraction} gives a generator of d_model={d_model}, '
      f'num_heads={num_heads}, mlp_dim={mlp_dim} (from {cfg.d_model}, {cfg.num_heads}, '
      f'{cfg.mlp_dim}); pick a fraction that keeps d_model >= 1 and divisible by num_heads.'
    )
  embed_dim = cfg.token_dim if cfg.token_dim != d_model else None
  return dataclasses.replace(
    cfg, d_model=d_model, num_heads=num_heads, mlp_dim=mlp_dim, embed_dim=embed_dim
  )


class Discriminator(nn.Module):
  """The encoder and the replaced-token head; returns logits [batch, length]."""

  cfg: TransformerConfig

  def setup(self):
    cfg = self.cfg
    self.encoder = transformer.Stack(cfg, name='encoder')
    self.rtd_dense = nn.Dense(
      cfg.d_model,
      kernel_init=transformer.normal_init(cfg, 'embed', 'mlp', fan_in=cfg.d_model),
      bias_init=transformer.zeros_init('mlp'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='rtd_dense',
    )
    # One output: its axis stays unnamed, i.e. never sharded.
    self.rtd_logit = nn.Dense(
      1,
      kernel_init=transformer.normal_init(cfg, 'mlp', None, fan_in=cfg.d_model),
      bias_init=transformer.zeros_init(None),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name='rtd_logit',
    )

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    x = self.encoder(tokens, segment_ids, positions, token_types, deterministic)
    h = transformer.activation_fn(self.cfg.activation)(self.rtd_dense(x))
    logits = self.rtd_logit(h)[..., 0]  # [batch, length]
    return nn.with_logical_constraint(logits, ('batch', 'length'))


def _with_embed(variables: dict, update) -> dict:
  """`variables` with the generator's encoder/embed params replaced by `update(embed)`."""
  params = dict(variables.get('params', {}))
  encoder = dict(params.get('encoder', {}))
  embed = update(dict(encoder.get('embed', {})))
  if embed:
    encoder['embed'] = embed
  else:  # A generator as wide as E has no projection: no embed params of its own.
    encoder.pop('embed', None)
  return {**variables, 'params': {**params, 'encoder': encoder}}


class ElectraPretraining(nn.Module):
  """Generator and discriminator over one embedding block (layout in the module docstring).

  `cfg` is the discriminator's config and `generator_cfg` the generator's
  (`generator_config`). The objective calls `generate` on the masked inputs and
  `discriminate` on the generator-corrupted ones; `__call__` runs both on the same
  tokens, for `init`.
  """

  cfg: TransformerConfig
  generator_cfg: TransformerConfig

  def setup(self):
    if self.generator_cfg.token_dim != self.cfg.token_dim:
      raise ValueError(
        f'The generator embeds {self.generator_cfg.token_dim} wide and the discriminator '
        f'{self.cfg.token_dim}: shared embeddings need one width (use generator_config).'
      )
    self.discriminator = Discriminator(self.cfg, name='discriminator')
    initializing = self.is_initializing()
    generator = nn.map_variables(
      heads.MaskedLM,
      'params',
      trans_in_fn=self._borrow_embeddings,
      trans_out_fn=self._drop_borrowed,
      init=initializing,
      mutable=initializing,
    )
    self.generator = generator(self.generator_cfg, name='generator')

  def _borrow_embeddings(self, variables: dict) -> dict:
    """Hands the generator the discriminator's tables and norm (its own projection stays)."""
    shared = self.discriminator.variables['params']['encoder']['embed']
    borrowed = {name: value for name, value in shared.items() if name != 'project'}
    return _with_embed(variables, lambda embed: {**embed, **borrowed})

  def _drop_borrowed(self, variables: dict) -> dict:
    """Keeps only the generator's own embedding params (its projection) when it writes any."""
    if 'params' not in variables:  # Applying: nothing is written.
      return variables
    own = lambda embed: {k: v for k, v in embed.items() if k == 'project'}  # noqa: E731
    return _with_embed(variables, own)

  def train_flops_per_token(self, seq_len: int, predicted_len: int | None = None) -> float:
    """Both networks' training FLOPs per token (models/flops.py's convention): the
    generator with its MLM head over the vocabulary (at `predicted_len` gathered
    positions per row), the discriminator with its d x d + d x 1 head instead of a
    vocabulary projection, at every position."""
    cfg, generator_cfg = self.cfg, self.generator_cfg
    head = cfg.d_model * cfg.d_model + cfg.d_model  # Dense d x d, then one logit.
    discriminator = flops.train_flops_per_token(cfg, seq_len, head)
    predicted = 1.0 if predicted_len is None else predicted_len / seq_len
    mlm = flops.vocabulary_macs(generator_cfg, mlm_transform=True) * predicted
    return discriminator + flops.train_flops_per_token(generator_cfg, seq_len, mlm)

  def generate(
    self,
    tokens,
    segment_ids,
    positions=None,
    token_types=None,
    deterministic=True,
    masked_positions=None,
  ):
    """Generator MLM logits [batch, length, vocab] (or [batch, P, vocab] at the
    `masked_positions` [batch, P] only)."""
    return self.generator(
      tokens, segment_ids, positions, token_types, deterministic, masked_positions=masked_positions
    )

  def discriminate(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    """Discriminator logits [batch, length]: > 0 means "replaced"."""
    return self.discriminator(tokens, segment_ids, positions, token_types, deterministic)

  def __call__(self, tokens, segment_ids, positions=None, token_types=None, deterministic=True):
    """(generator logits, discriminator logits) of the same tokens."""
    # The discriminator first: at init it creates the tables the generator borrows.
    rtd = self.discriminate(tokens, segment_ids, positions, token_types, deterministic)
    return self.generate(tokens, segment_ids, positions, token_types, deterministic), rtd
