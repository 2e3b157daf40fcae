"""A distillation student's model pieces: layers taken from its teacher, and TinyBERT's
learned projections of its widths onto the teacher's.

`take_layers` is DistilBERT's initialization (Sanh et al. 2019, section 3: "taking one
layer out of two" of the teacher): a student with the teacher's width and the chosen
teacher layers, renumbered, plus every other leaf (embeddings, pooler, task head).
`WithProjections` wraps a student model whose width differs from the teacher's and adds
the matrices TinyBERT (Jiao et al. 2020, eqs. 8 and 9: W_e, W_h) learns to map its
embeddings and hidden states onto the teacher's width. They are trained with the
student (they sit in its params, as `distill_embedding` and `distill_hidden`) but are not part of the
student: a model built without them (eval.py with the task config, `init_from`) ignores
them, as `training/pretrained.merge` leaves unused leaves behind.
"""

import re

import flax.linen as nn
import jax.numpy as jnp

from models import transformer

_BLOCK = re.compile(r'^block_(\d+)$')


def take_layers(params: dict, layers: tuple[int, ...], stack: str = 'encoder') -> dict:
  """The params of a student made of `layers` of the teacher's `stack`, bottom up.

  Args:
    params: the teacher's params, a nested dict with looped layers (`block_0`, ...).
    layers: teacher layer indices (0-based, increasing), one per student layer.
    stack: the stack's name in the model.

  Returns:
    The same tree with `stack/block_j` = the teacher's `stack/block_{layers[j]}` and no
    other block; the rest (embeddings, norms, pooler, heads) as it is.

  Raises:
    ValueError: the teacher's layers are not looped, or an index is out of range or
      repeated or not increasing.
  """
  tree = params[stack]
  teacher_blocks = sorted(int(m.group(1)) for m in map(_BLOCK.match, tree) if m)
  if not teacher_blocks:
    raise ValueError(
      f'{stack} has no looped blocks (block_0, ...): convert scanned or shared layers first '
      f'(its keys: {sorted(tree)}).'
    )
  depth = len(teacher_blocks)
  if not layers or any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
    raise ValueError(f'Student layers {layers} must be increasing teacher layer indices.')
  if layers[0] < 0 or layers[-1] >= depth:
    raise ValueError(
      f'Student layers {layers} must lie in 0..{depth - 1} (the teacher has {depth}).'
    )
  student = {k: v for k, v in tree.items() if not _BLOCK.match(k)}
  for j, i in enumerate(layers):
    student[f'block_{j}'] = tree[f'block_{i}']
  return {**params, stack: student}


class WithProjections(nn.Module):
  """A student model with TinyBERT's W_e and W_h onto the teacher's `width`.

  Called like the model it wraps (same arguments, same outputs). Its params are the
  model's at the top level (`nn.share_scope`: the student's paths do not change), plus
  `distill_embedding` and `distill_hidden`.
  """

  model: nn.Module
  width: int  # The teacher's d_model.

  def setup(self):
    nn.share_scope(self, self.model)
    cfg = self.model.cfg
    dense = lambda name: nn.Dense(  # noqa: E731
      self.width,
      kernel_init=transformer.normal_init(cfg, 'embed', 'mlp', fan_in=cfg.d_model),
      bias_init=transformer.zeros_init('mlp'),
      dtype=cfg.compute_dtype,
      param_dtype=cfg.storage_dtype,
      name=name,
    )
    self.projections = {
      'embedding': dense('distill_embedding'),  # W_e
      'hidden': dense('distill_hidden'),  # W_h, shared by every layer.
    }

  @property
  def cfg(self):
    return self.model.cfg

  def init_inputs(self, seq_len: int):
    if hasattr(self.model, 'init_inputs'):
      return self.model.init_inputs(seq_len)
    tokens = jnp.ones((1, seq_len), jnp.int32)
    return tokens, tokens, tokens

  def __call__(self, *args, **kwargs):
    if self.is_initializing():  # Create the projections' params with the model's.
      for dense in self.projections.values():
        dense(jnp.zeros((1, self.model.cfg.d_model), self.model.cfg.compute_dtype))
    return self.model(*args, **kwargs)

  def project(self, x, which: str):
    """[..., student d_model] -> [..., teacher d_model] through W_e ('embedding') or W_h."""
    return self.projections[which](x)

  def head_macs(self, seq_len: int, predicted_len: int) -> float:
    """The model's head and W_e / W_h onto the teacher's width over the embeddings and
    every layer's states (TinyBERT's intermediate distillation projects them all)."""
    cfg = self.model.cfg
    projections = (cfg.num_layers + 1) * cfg.d_model * self.width
    return self.model.head_macs(seq_len, predicted_len) + projections
