"""The machinery every family shares: name rules, tensor layouts, tree walking, checks.

A family (see `models/convert/__init__.py`) lists `Rule`s. A rule names one
source tensor, the param path(s) it becomes in our tree ('/'-joined, e.g.
'encoder/block_0/attention/query/kernel') and the `Layout` that turns the
source array into ours and back. `Tied` names a source tensor that is only an
alias of another (an output embedding tied to the input one). `Family` and
`Head` describe a family (the interface is in __init__.py). `to_ours` and
`to_source` run a family's rules in either direction; `check_tree` compares an
imported tree with the shapes our Flax modules create. Imported params are
float32 (training keeps float32 master weights; bf16/fp16 sources are upcast).

Source layouts: PyTorch `nn.Linear` weights are [out, in] (ours: kernel
[in, out]); GPT-2's `Conv1D` weights are already [in, out]; attention
projections are split into heads: query/key/value kernels [embed, heads, kv],
biases [heads, kv], the output kernel [heads, kv, embed].
"""

import dataclasses
import re
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.transformer import TransformerConfig

Array = np.ndarray
Flat = dict[str, Array]  # '/'-joined param path (or source tensor name) -> array.

# HF `hidden_act` values we run exactly, and our name for each.
HF_ACTIVATIONS = {
  'gelu': 'gelu',
  'gelu_new': 'gelu_tanh',
  'gelu_pytorch_tanh': 'gelu_tanh',
  'relu': 'relu',
}
OUR_ACTIVATIONS = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new', 'relu': 'relu'}


def expect(hf: dict, key: str, allowed: tuple) -> None:
  """Raises a ValueError naming `key` unless config value hf[key] is one of `allowed`."""
  if hf.get(key) not in allowed:
    raise ValueError(
      f'config.json: {key}={hf.get(key)!r} is not supported; the converter handles {allowed}.'
    )


def activation_from_hf(hf: dict, key: str) -> str:
  """Our activation name for config value hf[key] ('gelu_new' -> 'gelu_tanh', ...)."""
  expect(hf, key, tuple(HF_ACTIVATIONS))
  return HF_ACTIVATIONS[hf[key]]


def activation_to_hf(cfg: TransformerConfig) -> str:
  if cfg.activation not in OUR_ACTIVATIONS:
    raise ValueError(f'activation={cfg.activation!r} has no Hugging Face name.')
  return OUR_ACTIVATIONS[cfg.activation]


def divisible_heads(d_model: int, heads: int) -> None:
  if d_model % heads:
    raise ValueError(f'config.json: hidden size {d_model} is not divisible by {heads} heads.')


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one source tensor becomes our array(s), and back."""

  name: str
  to_ours: Callable[[Array, TransformerConfig], tuple[Array, ...]]
  to_source: Callable[[tuple[Array, ...], TransformerConfig], Array]


def _heads(cfg: TransformerConfig) -> tuple[int, int]:
  return cfg.num_heads, cfg.kv_dim


COPY = Layout('copy', lambda x, cfg: (x,), lambda xs, cfg: xs[0])
# nn.Linear weight [out, in] <-> Dense kernel [in, out].
LINEAR = Layout('linear', lambda x, cfg: (x.T,), lambda xs, cfg: xs[0].T)
# Query/key/value nn.Linear weight [heads * kv, embed] <-> kernel [embed, heads, kv].
LINEAR_TO_HEADS = Layout(
  'linear_to_heads',
  lambda x, cfg: (x.T.reshape(x.shape[1], *_heads(cfg)),),
  lambda xs, cfg: xs[0].reshape(xs[0].shape[0], -1).T,
)
# Query/key/value bias [heads * kv] <-> [heads, kv].
BIAS_TO_HEADS = Layout(
  'bias_to_heads', lambda x, cfg: (x.reshape(_heads(cfg)),), lambda xs, cfg: xs[0].reshape(-1)
)
# Attention output nn.Linear weight [embed, heads * kv] <-> kernel [heads, kv, embed].
LINEAR_FROM_HEADS = Layout(
  'linear_from_heads',
  lambda x, cfg: (x.T.reshape(*_heads(cfg), x.shape[0]),),
  lambda xs, cfg: xs[0].reshape(-1, xs[0].shape[-1]).T,
)
# GPT-2 Conv1D attention output weight [heads * kv, embed] <-> kernel [heads, kv, embed].
CONV1D_FROM_HEADS = Layout(
  'conv1d_from_heads',
  lambda x, cfg: (x.reshape(*_heads(cfg), x.shape[1]),),
  lambda xs, cfg: xs[0].reshape(-1, xs[0].shape[-1]),
)
# GPT-2 fused c_attn Conv1D weight [embed, 3 * heads * kv] <-> query, key, value kernels.
FUSED_QKV = Layout(
  'fused_qkv',
  lambda x, cfg: tuple(w.reshape(x.shape[0], *_heads(cfg)) for w in np.split(x, 3, axis=1)),
  lambda xs, cfg: np.concatenate([w.reshape(w.shape[0], -1) for w in xs], axis=1),
)
# GPT-2 fused c_attn bias [3 * heads * kv] <-> query, key, value biases [heads, kv].
FUSED_QKV_BIAS = Layout(
  'fused_qkv_bias',
  lambda x, cfg: tuple(b.reshape(_heads(cfg)) for b in np.split(x, 3)),
  lambda xs, cfg: np.concatenate([b.reshape(-1) for b in xs]),
)


@dataclasses.dataclass(frozen=True)
class Rule:
  """Source tensor `source` is our param(s) `ours` in `layout`."""

  source: str
  ours: tuple[str, ...]
  layout: Layout = COPY


@dataclasses.dataclass(frozen=True)
class Tied:
  """Source tensor `source` is a copy of `target` (tied weights); it is checked, not stored."""

  source: str
  target: str


@dataclasses.dataclass(frozen=True)
class Head:
  """One of our models a checkpoint may hold, and its transformers counterpart."""

  model: Callable[[TransformerConfig], nn.Module]  # e.g. heads.MaskedLM.
  hf_auto: str  # transformers Auto class that loads it, e.g. 'AutoModelForMaskedLM'.
  hf_architecture: str  # config.json `architectures` entry on export, e.g. 'BertForMaskedLM'.


@dataclasses.dataclass(frozen=True)
class Family:
  """Everything family-specific about a checkpoint format (the interface in __init__.py)."""

  name: str
  prefix: str  # HF base_model_prefix: 'bert' for 'bert.embeddings...'; '' if none.
  stack: str  # Our top-level group of the stack: 'encoder', or 'decoder' for GPT.
  config_from_hf: Callable[[dict], TransformerConfig]
  config_to_hf: Callable[[TransformerConfig], dict]
  rules: Callable[[TransformerConfig], list]  # Rule and Tied, source names with prefix.
  heads: dict[str, Head]  # Our models in the union, base model first.
  ignored: tuple[str, ...] = ()  # Regexes of source buffers that are not parameters.

  def normalize(self, tensors: Flat) -> Flat:
    """Adds the base-model prefix to a checkpoint saved from the bare base model."""
    if not self.prefix or any(n.startswith(self.prefix + '.') for n in tensors):
      return tensors
    return {f'{self.prefix}.{n}': x for n, x in tensors.items()}


def dense(source: str, ours: str, layout: Layout = LINEAR, bias: Layout = COPY) -> list[Rule]:
  """Rules of a layer with `.weight` and `.bias` onto our `kernel` and `bias`."""
  return [
    Rule(f'{source}.weight', (f'{ours}/kernel',), layout),
    Rule(f'{source}.bias', (f'{ours}/bias',), bias),
  ]


def norm(source: str, ours: str, weight: str = 'weight', bias: str = 'bias') -> list[Rule]:
  """Rules of a LayerNorm: the source's `weight`/`bias` are our `scale`/`bias`."""
  return [
    Rule(f'{source}.{weight}', (f'{ours}/scale',)),
    Rule(f'{source}.{bias}', (f'{ours}/bias',)),
  ]


def attention_qkv(source: dict[str, str], ours: str) -> list[Rule]:
  """Rules of separate query/key/value nn.Linear layers: {'query': source name, ...}."""
  rules = []
  for name in ('query', 'key', 'value'):
    rules += dense(source[name], f'{ours}/{name}', LINEAR_TO_HEADS, BIAS_TO_HEADS)
  return rules


def flatten(tree: dict, prefix: str = '') -> Flat:
  """{'a': {'b': x}} -> {'a/b': x}."""
  flat = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten(value, path + '/'))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Flat) -> dict:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


@dataclasses.dataclass
class Imported:
  """Result of `to_ours`: our flat params and what of the source was not converted."""

  params: Flat
  unconverted: list[str]  # 'name [shape]: why', for the warning and model.json.
  ignored: list[str]  # Non-parameter buffers (position_ids, causal masks).


def to_ours(
  rules: list, tensors: Flat, cfg: TransformerConfig, ignored: tuple[str, ...]
) -> Imported:
  """Applies `rules` to the source `tensors` (names already normalized by the family).

  Args:
    rules: The family's `Rule`s and `Tied`s; rules whose source is absent are skipped.
    tensors: Source name -> array.
    cfg: Our config (gives heads and kv for the head split).
    ignored: Regexes of source names that are buffers, not parameters.

  Returns:
    Our flat params (float32, C-contiguous) and the source tensors left over.
  """
  params, used = {}, set()
  for rule in rules:
    if isinstance(rule, Tied) or rule.source not in tensors:
      continue
    x = tensors[rule.source]
    try:
      arrays = rule.layout.to_ours(np.asarray(x, np.float32), cfg)
    except ValueError as e:
      raise ValueError(
        f'Tensor {rule.source} {list(x.shape)} does not fit the config '
        f'(heads={cfg.num_heads}, kv={cfg.kv_dim}): {e}'
      ) from e
    for path, array in zip(rule.ours, arrays, strict=True):
      params[path] = np.ascontiguousarray(array)
    used.add(rule.source)
  unconverted = []
  for rule in rules:
    if isinstance(rule, Tied) and rule.source in tensors:
      used.add(rule.source)
      target = tensors.get(rule.target)
      if target is None or not np.array_equal(tensors[rule.source], target):
        unconverted.append(
          f'{rule.source} {list(tensors[rule.source].shape)}: tied to {rule.target} '
          'by the config but holds different values (the model ignores it)'
        )
  ignored_names = sorted(
    n for n in tensors if n not in used and any(re.fullmatch(p, n) for p in ignored)
  )
  for name in sorted(set(tensors) - used - set(ignored_names)):
    unconverted.append(f'{name} {list(tensors[name].shape)}: no counterpart in our models')
  return Imported(params, unconverted, ignored_names)


def to_source(rules: list, params: Flat, cfg: TransformerConfig) -> Flat:
  """Applies `rules` backwards: our flat params -> source name -> array.

  Raises:
    ValueError: A param no rule covers, or a rule only partly covered.
  """
  tensors, used = {}, set()
  for rule in rules:
    if isinstance(rule, Tied):
      continue
    present = [p in params for p in rule.ours]
    if not any(present):
      continue
    if not all(present):
      missing = [p for p, ok in zip(rule.ours, present, strict=True) if not ok]
      raise ValueError(f'Cannot write {rule.source}: our params lack {missing}.')
    arrays = tuple(np.asarray(params[p]) for p in rule.ours)
    tensors[rule.source] = np.ascontiguousarray(rule.layout.to_source(arrays, cfg))
    used.update(rule.ours)
  left = sorted(set(params) - used)
  if left:
    raise ValueError(f'These params have no name in the target format: {left}.')
  return tensors


def reference_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
  """Flat param path -> shape of what `model.init` creates (via jax.eval_shape, no memory)."""
  tokens = jnp.zeros((1, 2), jnp.int32)
  args = model.init_inputs(2) if hasattr(model, 'init_inputs') else (tokens, tokens + 1)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
  return {path: tuple(x.shape) for path, x in flatten(nn.unbox(variables)['params']).items()}


def check_tree(params: Flat, models: dict[str, nn.Module], stack: str) -> list[str]:
  """Checks `params` against the union of what our `models` create; returns the present ones.

  Args:
    params: Our flat params, as imported.
    models: Head name -> the Flax module of that head (e.g. 'masked_lm' -> MaskedLM).
    stack: The top-level group every checkpoint has ('encoder', or 'decoder' for GPT).

  Returns:
    The names of the `models` whose params are all present, in `models` order.

  Raises:
    ValueError: Naming mismatched shapes, missing params, or a head present only in part.
  """
  shapes = {name: reference_shapes(model) for name, model in models.items()}
  reference = {
    path: shape for model_shapes in shapes.values() for path, shape in model_shapes.items()
  }
  bad = [
    f'{p}: checkpoint {list(params[p].shape)}, ours {list(reference[p])}'
    for p in sorted(params)
    if p in reference and tuple(params[p].shape) != reference[p]
  ]
  if bad:
    raise ValueError('Shapes differ from what the config implies:\n  ' + '\n  '.join(bad))
  extra = sorted(set(params) - set(reference))
  if extra:
    raise ValueError(f'Converted params our models do not have: {extra}')
  groups = {p.split('/')[0] for p in params} | {stack}
  missing = sorted(p for p in reference if p.split('/')[0] in groups and p not in params)
  if missing:
    raise ValueError('The checkpoint lacks these params:\n  ' + '\n  '.join(missing))
  present = [n for n, s in shapes.items() if {p.split('/')[0] for p in s} <= groups]
  covered = {p.split('/')[0] for n in present for p in shapes[n]} | {stack}
  if groups - covered:
    raise ValueError(f'Params {sorted(groups - covered)} are only part of a head: {present=}.')
  return present
