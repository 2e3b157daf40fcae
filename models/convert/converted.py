"""Our converted-checkpoint directory: Orbax params, model.json, tokenizer files.

    OUT/params       Orbax (StandardCheckpointer) save of a plain dict of float32
                     NumPy arrays: the union of what the source held, e.g.
                     {'encoder', 'pooler', 'mlm_transform', 'mlm_norm', 'mlm_bias'}.
    OUT/model.json   {'family', 'config' (TransformerConfig fields), 'heads',
                     'unconverted', 'ignored', 'hf_config', 'source', 'tokenizer_files',
                     'digests' ({tensor path: {'dtype', 'shape', 'sha256'}})}.
    OUT/vocab.txt ...  Tokenizer files copied from the source.

`load` reads it back and checks every tensor against the digest the converter wrote
(Orbax reads flipped bytes back as other numbers without a word, and a fine-tuning run
would start from them): a difference is an error naming the file and the tensor;
directories written before digests existed load unchecked. `head_params` picks the
subtrees one of our models takes (`heads.Backbone`, `heads.MaskedLM`, `heads.CausalLM`),
e.g. `heads.MaskedLM(c.config).apply({'params': head_params(c, 'masked_lm')}, ...)`.
"""

import dataclasses
import hashlib
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
    'digests': tensor_digests(converted.params),
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
  params_path = os.path.join(path, PARAMS)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      params = _to_numpy(checkpointer.restore(params_path))
  except Exception as error:  # Missing, truncated or garbled files: Orbax's errors vary.
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    raise ValueError(
      f'{params_path}: unreadable ({first_line}); the converted checkpoint is damaged: '
      'convert it again.'
    ) from error
  if 'digests' in meta:  # Written by a converter that records them.
    check_digests(params, meta['digests'], params_path)
  return Converted(
    family=meta['family'],
    config=TransformerConfig(**meta['config']),
    params=params,
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


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}/'))
    else:
      out[prefix + key] = value
  return out


def tensor_digests(params: dict) -> dict:
  """{tensor path: {'dtype', 'shape', 'sha256' of its bytes (row-major)}} of `params`."""
  digests = {}
  for name, value in sorted(_flat(params).items()):
    array = np.asarray(value)
    digests[name] = {
      'dtype': array.dtype.name,
      'shape': list(array.shape),
      'sha256': hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest(),
    }
  return digests


def check_digests(params: dict, saved: dict, where: str) -> None:
  """Raises ValueError naming `where` and the first tensors whose digest (dtype, shape,
  bytes) differs from the one the converter wrote, or that are missing or extra."""
  loaded = tensor_digests(params)
  names = sorted(set(saved) | set(loaded))
  differing = [n for n in names if n not in saved or n not in loaded or saved[n] != loaded[n]]
  if not differing:
    return
  more = f' and {len(differing) - 3} more' if len(differing) > 3 else ''
  named = f'tensors {", ".join(differing[:3])}{more} differ'
  if len(differing) == 1:
    named = f'tensor {differing[0]} differs'
  raise ValueError(
    f'{where}: {named} from the digests written by the converter (model.json): the '
    'converted checkpoint is damaged; convert it again.'
  )


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
