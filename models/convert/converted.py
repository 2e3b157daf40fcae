"""Our converted-checkpoint directory: Orbax params, model.json, tokenizer files.

    OUT/params       Orbax (StandardCheckpointer) save of a plain dict of float32
                     NumPy arrays: the union of what the source held, e.g.
                     {'encoder', 'pooler', 'mlm_transform', 'mlm_norm', 'mlm_bias'}.
    OUT/model.json   {'family', 'config' (TransformerConfig fields), 'heads',
                     'unconverted', 'ignored', 'hf_config', 'source', 'tokenizer_files'}.
    OUT/vocab.txt ...  Tokenizer files copied from the source.

`load` reads it back; `head_params` picks the subtrees one of our models takes
(`heads.Backbone`, `heads.MaskedLM`, `heads.CausalLM`), e.g.
`heads.MaskedLM(c.config).apply({'params': head_params(c, 'masked_lm')}, ...)`.
"""

import dataclasses
import json
import os

import numpy as np

from models.transformer import TransformerConfig

PARAMS = 'params'
MODEL_JSON = 'model.json'
FORMAT = 'plm-flax-converted/1'


@dataclasses.dataclass
class Converted:
  """A converted checkpoint in memory."""

  family: str
  config: TransformerConfig
  params: dict  # Nested dict of NumPy arrays.
  heads: list[str]  # Family heads whose params are all present, e.g. ['masked_lm'].
  unconverted: list[str] = dataclasses.field(default_factory=list)
  ignored: list[str] = dataclasses.field(default_factory=list)
  hf_config: dict = dataclasses.field(default_factory=dict)  # The source config.json.
  source: str = ''
  tokenizer_files: list[str] = dataclasses.field(default_factory=list)


def save(out: str, converted: Converted) -> None:
  """Writes `converted` to directory `out` (which must not hold a checkpoint already)."""
  import orbax.checkpoint as ocp

  out = os.path.abspath(out)
  if os.path.exists(os.path.join(out, PARAMS)):
    raise FileExistsError(f'{out} already holds a converted checkpoint; remove it or pick another.')
  os.makedirs(out, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(out, PARAMS), converted.params)
  meta = {
    'format': FORMAT,
    'family': converted.family,
    'config': dataclasses.asdict(converted.config),
    'heads': converted.heads,
    'unconverted': converted.unconverted,
    'ignored': converted.ignored,
    'hf_config': converted.hf_config,
    'source': converted.source,
    'tokenizer_files': converted.tokenizer_files,
  }
  with open(os.path.join(out, MODEL_JSON), 'w') as f:
    json.dump(meta, f, indent=2)
    f.write('\n')


def load(path: str) -> Converted:
  """Reads a directory written by `save` (params as NumPy arrays)."""
  import orbax.checkpoint as ocp

  path = os.path.abspath(path)
  meta_path = os.path.join(path, MODEL_JSON)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f'{path} has no {MODEL_JSON}; is it a converted checkpoint?')
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get('format') != FORMAT:
    raise ValueError(f'{meta_path}: format {meta.get("format")!r}, expected {FORMAT!r}.')
  fields = {f.name for f in dataclasses.fields(TransformerConfig)}
  unknown = sorted(set(meta['config']) - fields)
  if unknown:
    raise ValueError(f'{meta_path}: config fields {unknown} are not TransformerConfig fields.')
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(os.path.join(path, PARAMS))
  return Converted(
    family=meta['family'],
    config=TransformerConfig(**meta['config']),
    params=_to_numpy(params),
    heads=meta['heads'],
    unconverted=meta['unconverted'],
    ignored=meta['ignored'],
    hf_config=meta['hf_config'],
    source=meta['source'],
    tokenizer_files=meta['tokenizer_files'],
  )


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


# Top-level groups of each of our models; the stack is 'encoder' or 'decoder'.
_HEAD_GROUPS = {
  'backbone': ('encoder', 'pooler'),
  'masked_lm': ('encoder', 'mlm_transform', 'mlm_norm', 'mlm_bias', 'mlm_decoder'),
  'causal_lm': ('decoder', 'lm_head'),
  'seq2seq_lm': ('shared', 'encoder', 'decoder', 'lm_head'),
}


def head_params(converted: Converted, head: str) -> dict:
  """The params of one of our models: 'backbone', 'masked_lm', 'causal_lm' or 'seq2seq_lm'.

  Args:
    converted: A loaded checkpoint.
    head: Which model; 'backbone' of a GPT checkpoint is its decoder, renamed 'encoder'.

  Returns:
    The subtrees of `converted.params` that model takes (only those present).
  """
  if head not in _HEAD_GROUPS:
    raise ValueError(f'Unknown head {head!r}; expected one of {list(_HEAD_GROUPS)}.')
  params = converted.params
  if head == 'backbone' and 'encoder' not in params:
    params = {'encoder': params['decoder']}
  if head == 'masked_lm' and 'mlm_bias' not in params:
    raise ValueError(
      f'This {converted.family} checkpoint has no MLM head; heads: {converted.heads}.'
    )
  return {k: params[k] for k in _HEAD_GROUPS[head] if k in params}
