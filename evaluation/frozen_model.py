"""A checkpoint's Transformer stack, frozen, for looking inside it: what each layer holds
and where each head attends (tools/attention.py; probes).

`load(path)` reads a converted checkpoint (`python -m models.convert`) or a train.py run
(a fine-tuning run's best checkpoint, else its newest), verified against its digests, with
its tokenizer; `forward` runs the stack alone (no task head) on a batch and returns the
final states with the collections asked for: 'attention_weights' (each layer's attention
distributions) and 'intermediates' (the embeddings' and each block's output, q/k/v), read
per layer by models/intermediates.py.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import tasks, tokenizers
from models import transformer
from models.transformer import TransformerConfig
from training import model_setup, pretrained

INPUTS = ('tokens', 'segment_ids', 'positions', 'token_types')  # A row's arrays, in call order.


class StackOnly(nn.Module):
  """The stack of a checkpoint under its own name ('encoder', or a GPT's 'decoder')."""

  cfg: TransformerConfig
  stack: str = 'encoder'

  @nn.compact
  def __call__(self, tokens, segment_ids, positions, token_types):
    stack = transformer.Stack(self.cfg, name=self.stack)
    return stack(tokens, segment_ids, positions, token_types, deterministic=True)


@dataclasses.dataclass
class FrozenModel:
  """A checkpoint's stack and what reads its inputs."""

  cfg: TransformerConfig
  params: dict  # {stack: NumPy tree}: the stack's params alone.
  stack: str  # 'encoder' or 'decoder'.
  tokenizer: tokenizers.Tokenizer
  source: str  # Where the params came from, for reports.
  _applies: dict = dataclasses.field(default_factory=dict, repr=False)  # keep -> jitted.

  @property
  def num_layers(self) -> int:
    return self.cfg.num_layers


def load(path: str) -> FrozenModel:
  """The stack of checkpoint `path` (converted, or a train.py run) and its tokenizer.

  Raises:
    FileNotFoundError: `path` is neither kind, or a run without a checkpoint.
    ValueError: damaged weights, or a model with no Transformer stack (ELMo, word2vec).
  """
  described = model_setup.describe(path)
  if not isinstance(described.config, TransformerConfig):
    raise ValueError(f'{path}: {type(described.config).__name__} has no Transformer stack.')
  if described.kind == 'run':
    params, step, which = pretrained.best_or_latest_params(path)
    source = f'{path} ({which} checkpoint, step {step})'
  else:
    params, source = pretrained.load_params(described), f'{path} (converted)'
  stack = next((name for name in ('encoder', 'decoder') if name in params), None)
  if stack is None:
    raise ValueError(f'{path}: no encoder or decoder stack in {sorted(params)}.')
  tokenizer = tokenizers.load_tokenizer(described.tokenizer_path)
  on_device = jax.device_put({stack: params[stack]})  # Once, not on every forward pass.
  return FrozenModel(described.config, on_device, stack, tokenizer, source)


def encode_texts(model: FrozenModel, texts: list[tuple[str, str | None]], seq_len: int) -> dict:
  """Rows [n, seq_len] of (text, second text or None) pairs, as the model reads them:
  [CLS] a [SEP] (b [SEP]) for a bidirectional encoder (data/tasks.py's `encode_pair`),
  [BOS] a (b) for a causal one; truncated to `seq_len`."""
  rows = []
  for text_a, text_b in texts:
    if model.cfg.causal:
      ids = [model.tokenizer.bos_id, *model.tokenizer.encode(text_a).tolist()]
      if text_b:
        ids += model.tokenizer.encode(text_b).tolist()
      ids = ids[:seq_len]
      row = {k: np.zeros(seq_len, np.int32) for k in INPUTS}
      row['tokens'][: len(ids)] = ids
      row['segment_ids'][: len(ids)] = 1
      row['positions'][: len(ids)] = np.arange(len(ids))
    else:
      row = tasks.encode_pair(model.tokenizer, text_a, text_b, seq_len)
    rows.append(row)
  return {k: np.stack([row[k] for row in rows]) for k in INPUTS}


def forward(model: FrozenModel, batch: dict, keep=('attention_weights',)) -> tuple[jax.Array, dict]:
  """(final states [n, length, embed], {collection: tree}) of the stack on `batch`
  (`encode_texts`' arrays), with the collections in `keep` returned. Compiled once per
  `keep` and batch shape."""
  keep = tuple(keep)
  if keep not in model._applies:
    module = StackOnly(model.cfg, model.stack)
    model._applies[keep] = jax.jit(
      lambda p, *xs: module.apply({'params': p}, *xs, mutable=list(keep))
    )
  arrays = [jnp.asarray(batch[k]) for k in INPUTS]
  return model._applies[keep](model.params, *arrays)
