"""Hugging Face directory <-> our converted checkpoint, for every family in FAMILIES.

Import: config.json -> TransformerConfig, tensors -> our param tree (the union
of stack, pooler and pretraining head the source holds), checked against the
shapes our Flax modules create. Export: the reverse, as config.json and
model.safetensors in the PyTorch layout that `from_pretrained` loads.
"""

import dataclasses
import os
import shutil
import warnings

from models import convert
from models.convert import checkpoint_io, converted, mapping, scan
from models.convert.converted import Converted

# Config fields that do not travel through config.json: the pooler comes from
# the weights; dtypes, the attention kernel, scan and remat are run-time choices.
_NOT_IN_HF_CONFIG = ('pooler', 'dtype', 'param_dtype', 'attention_impl', 'scan_layers', 'remat')
# Source config.json keys that export does not carry over.
_STALE_KEYS = ('_name_or_path', 'transformers_version', 'dtype', 'torch_dtype', 'architectures')


def resolve_family(name: str | None, hf_config: dict) -> str:
  """The family to convert with: `name`, which must agree with config.json's model_type."""
  model_type = hf_config.get('model_type')
  name = name or model_type
  if name not in convert.FAMILIES:
    raise ValueError(
      f'Family {name!r} (config.json model_type={model_type!r}) is not supported; '
      f'pass --family, one of: {", ".join(convert.FAMILIES)}.'
    )
  if model_type and model_type != name:
    raise ValueError(f'--family {name} but config.json says model_type={model_type!r}.')
  return name


def from_tensors(family_name: str, hf_config: dict, tensors: dict, source: str = '') -> Converted:
  """Converts source `tensors` (names as in a transformers checkpoint) of `family_name`.

  Raises:
    ValueError: An unsupported config value, or tensors that do not fit the config.
  """
  family = convert.get_family(family_name)
  cfg = family.config_from_hf(hf_config)
  tensors = family.normalize(tensors)
  imported = mapping.to_ours(family.rules(cfg), tensors, cfg, family.ignored)
  models = {name: head.model(cfg.replace(pooler=True)) for name, head in family.heads.items()}
  present = mapping.check_tree(imported.params, models, family.stack)
  has_pooler = any(p.startswith('pooler/') for p in imported.params)
  if 'backbone' in family.heads and 'backbone' not in present:
    present.insert(0, 'backbone')  # Backbone needs only the stack when cfg.pooler is False.
  return Converted(
    family=family_name,
    config=cfg.replace(pooler=has_pooler),
    params=mapping.unflatten(imported.params),
    heads=present,
    unconverted=imported.unconverted,
    ignored=imported.ignored,
    hf_config=hf_config,
    source=source,
  )


def warn_unconverted(c: Converted) -> None:
  if c.unconverted:
    warnings.warn(
      f'{len(c.unconverted)} source tensors were not converted (listed in model.json '
      '"unconverted"):\n  ' + '\n  '.join(c.unconverted),
      stacklevel=2,
    )


def import_hf(src: str, out: str, family: str | None = None) -> Converted:
  """Converts the Hugging Face model directory `src` into our checkpoint directory `out`.

  Args:
    src: Holds config.json and model.safetensors (or pytorch_model.bin, shards too).
    out: Output directory (created; must not hold a converted checkpoint).
    family: One of `convert.FAMILIES`; None takes config.json's model_type.

  Returns:
    What was written.
  """
  hf_config = checkpoint_io.read_config(src)
  family = resolve_family(family, hf_config)
  c = from_tensors(family, hf_config, checkpoint_io.read_tensors(src), os.path.abspath(src))
  warn_unconverted(c)
  os.makedirs(out, exist_ok=True)
  c.tokenizer_files = checkpoint_io.copy_tokenizer_files(src, out)
  converted.save(out, c)
  return c


def _check_expressible(family, cfg) -> dict:
  hf_config = family.config_to_hf(cfg)
  back = family.config_from_hf(hf_config)
  diffs = [
    f'{f.name}={getattr(cfg, f.name)!r} (a {family.name} checkpoint would give '
    f'{getattr(back, f.name)!r})'
    for f in dataclasses.fields(cfg)
    if f.name not in _NOT_IN_HF_CONFIG and getattr(cfg, f.name) != getattr(back, f.name)
  ]
  if diffs:
    raise ValueError(f'This config cannot be written as {family.name}: ' + '; '.join(diffs))
  return hf_config


def to_hf(c: Converted) -> tuple[dict, dict]:
  """Returns (config.json dict, tensors) of `c` in transformers' layout and names.

  Params in the scanned layout (`scan_layers`: one `blocks` subtree) are
  unstacked into `block_i` subtrees first.
  """
  family = convert.get_family(c.family)
  hf_config = _check_expressible(family, c.config)
  params = scan.to_looped(c.params) if c.config.scan_layers else c.params
  cfg = c.config.replace(scan_layers=False)
  tensors = mapping.to_source(family.rules(cfg), mapping.flatten(params), cfg)
  config = {k: v for k, v in c.hf_config.items() if k not in _STALE_KEYS}
  config.update(hf_config)
  present = [n for n in family.heads if n in c.heads] or list(family.heads)
  config['architectures'] = [family.heads[present[-1]].hf_architecture]
  config['torch_dtype'] = 'float32'
  return config, tensors


def export_hf(c: Converted, out: str, tokenizer_files_from: str | None = None) -> Converted:
  """Writes `c` as a Hugging Face directory (config.json, model.safetensors, tokenizer).

  Args:
    c: a converted checkpoint (`converted.load(dir)`), or a train.py run read as one
      (training/pretrained.load_run), whose `tokenizer_files` are then copied as they are.
    out: the Hugging Face directory to write.
    tokenizer_files_from: a converted directory whose source tokenizer files (vocab.txt,
      merges.txt, spiece.model, ...) are copied instead of `c.tokenizer_files`.
  """
  config, tensors = to_hf(c)
  checkpoint_io.write_hf_dir(out, config, tensors)
  if tokenizer_files_from is not None:
    checkpoint_io.copy_tokenizer_files(tokenizer_files_from, out)
  else:
    for path in c.tokenizer_files:
      shutil.copy(path, out)
  return c
