"""The checkpoint a fine-tuning run starts from (`config.init_from`).

`init_from` is either a converted checkpoint (`python -m models.convert`: model.json,
params/, tokenizer files; e.g. all-MiniLM-L6-v2 or bert-base-uncased) or a train.py
run directory (its newest checkpoint's params). The pretrained model's config sizes
the fine-tuned model (the run's `model.preset` is not used) and its tokenizer is the
run's unless `data.tokenizer_path` names one; the run's dtype, dropout and adapter
settings still apply. `merge` copies every pretrained leaf whose path the fine-tuned
model also has (the encoder, the pooler) and keeps the fresh initialization of the
rest (the task head, adapters); pretraining heads the model lacks are left behind.
"""

import dataclasses
import json
import os

import jax
import numpy as np

from models.convert import converted, from_run
from models.transformer import TransformerConfig


@dataclasses.dataclass
class Pretrained:
  """What a fine-tuning run needs to know about `init_from` before loading its weights."""

  path: str
  kind: str  # 'converted' or 'run'.
  config: TransformerConfig
  tokenizer_path: str


def describe(path: str) -> Pretrained:
  """Reads the model config and tokenizer location of `path` (no weights)."""
  path = os.path.abspath(path)
  if os.path.isfile(os.path.join(path, 'model.json')):
    with open(os.path.join(path, 'model.json')) as f:
      meta = json.load(f)
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    config = TransformerConfig(**{k: v for k, v in meta['config'].items() if k in fields})
    vocab = [os.path.join(path, os.path.basename(p)) for p in meta['tokenizer_files']]
    vocab = [p for p in vocab if p.endswith(('.txt', '.model')) and os.path.isfile(p)]
    return Pretrained(path, 'converted', config, vocab[0] if vocab else '')
  if from_run.is_run(path):
    config, tokenizer_path = from_run.run_model(path)
    return Pretrained(path, 'run', config, tokenizer_path)
  raise FileNotFoundError(
    f'init_from={path!r} is neither a converted checkpoint (model.json) nor a train.py run '
    '(config.json and checkpoints/).'
  )


def load_params(pretrained: Pretrained) -> dict:
  """The pretrained parameters as a nested dict of NumPy arrays (layers looped)."""
  if pretrained.kind == 'converted':
    return converted.load(pretrained.path).params
  return from_run.latest_params(pretrained.path)[0]


def _flatten(tree, prefix=()) -> dict:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, (*prefix, key)))
    return out
  return {prefix: tree}


def merge(fresh, pretrained: dict, shardings) -> tuple[dict, dict]:
  """`fresh` params with every leaf `pretrained` also holds replaced by the pretrained value.

  Args:
    fresh: the freshly initialized (sharded) params of the fine-tuned model.
    pretrained: nested dict of NumPy arrays (`load_params`).
    shardings: the NamedShardings of `fresh`, a matching tree.

  Returns:
    (params, report): the merged params, each leaf placed with its sharding, and
    {'loaded': [paths], 'fresh': [paths], 'unused': [paths of pretrained leaves not taken]}.

  Raises:
    ValueError: a shared path with a different shape, or no leaf in common at all.
  """
  source = {'/'.join(k): v for k, v in _flatten(pretrained).items()}
  loaded, kept = [], []

  def take(path, leaf, sharding):
    name = '/'.join(str(getattr(p, 'key', p)) for p in path)
    if name not in source:
      kept.append(name)
      return leaf
    value = source[name]
    if tuple(value.shape) != tuple(leaf.shape):
      raise ValueError(
        f'init_from: parameter {name} has shape {tuple(value.shape)} in the checkpoint but '
        f'{tuple(leaf.shape)} in this model; the model config must match the checkpoint.'
      )
    loaded.append(name)
    value = np.asarray(value, dtype=leaf.dtype)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  params = jax.tree_util.tree_map_with_path(take, fresh, shardings)
  if not loaded:
    raise ValueError(
      'init_from: the checkpoint shares no parameter with this model (its top-level groups: '
      f'{sorted(pretrained)}; the model has {sorted(fresh)}).'
    )
  unused = sorted(set(source) - set(loaded))
  return params, {'loaded': loaded, 'fresh': kept, 'unused': unused}
