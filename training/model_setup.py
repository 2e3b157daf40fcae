"""The objective module and the model config of a run, without the data stack.

Kept apart from training/experiment.py (which imports the Grain loader and the
tokenizers) so that benchmarks and model-only tools import no TensorFlow, TFDS,
Grain or ml_collections.
"""

import dataclasses
import importlib

from models import presets

# What every objective defines (objectives/mlm.py is an example); it may also define
# `packed_length(objective_cfg, seq_len)` (see `packed_length` below).
_OBJECTIVE_API = ('FRAMING', 'SHOW', 'build_model', 'make_preprocess', 'loss_fn', 'eval_summary')


def load_objective(module_path: str, objective_cfg=None):
  """The objective named in `config.objective.module`.

  A module that needs its config to assemble itself (a combination of objectives,
  objectives/multitask.py; ELECTRA's generator size) defines
  `configure(objective_cfg)`, which returns the object providing the API; any
  other module is the objective itself.
  """
  try:
    module = importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    raise ValueError(
      f'objective.module={module_path!r} cannot be imported ({e}); '
      "expected a module path such as 'objectives.mlm' or 'objectives.clm'."
    ) from e
  objective = module
  if hasattr(module, 'configure') and objective_cfg is not None:
    objective = module.configure(objective_cfg)
  missing = [name for name in _OBJECTIVE_API if not hasattr(objective, name)]
  if missing:
    raise ValueError(f'Objective module {module_path!r} lacks {", ".join(missing)}.')
  return objective


def packed_length(objective, config) -> int:
  """Tokens per packed row before the objective's preprocessing: `seq_len`, unless the
  objective changes lengths (T5 span corruption packs longer rows so that its
  corrupted inputs fill `seq_len` exactly) and says so with `packed_length`."""
  if hasattr(objective, 'packed_length'):
    return objective.packed_length(config.objective, config.seq_len)
  return config.seq_len


def model_config(config, vocab_size: int):
  """The preset named by `config.model.preset`, sized for the tokenizer and run.

  Returns the preset's config dataclass (a TransformerConfig, or the config of a
  family outside the Transformer such as ELMo), with the run's overrides.
  """
  cls = presets.config_class(config.model.preset)
  fields = {f.name for f in dataclasses.fields(cls)}
  overrides = dict(vocab_size=vocab_size, dtype=config.model.dtype)
  overrides.update(param_dtype=config.model.param_dtype)
  if 'attention_impl' in fields:
    overrides.update(attention_impl=config.model.attention_impl or None)
    overrides.update(scan_layers=config.model.scan_layers, remat=config.model.remat)
  elif config.model.scan_layers or config.model.remat != 'none':
    raise ValueError(
      f'config.model.scan_layers / remat apply to Transformer presets, not {config.model.preset!r}'
      f' ({cls.__name__}); leave them at false / none.'
    )
  sizes = ('num_layers', 'num_decoder_layers', 'd_model', 'num_heads', 'mlp_dim', 'embed_dim')
  sizes += ('adapter_dim',)
  for field in (*sizes, 'dropout_rate'):
    if config.model[field] is not None:
      if field not in fields:
        raise ValueError(
          f'config.model.{field}={config.model[field]} does not apply to preset '
          f'{config.model.preset!r} ({cls.__name__} has no field {field!r}).'
        )
      overrides[field] = config.model[field]
  if config.model.dropout_rate is not None and 'attention_dropout_rate' in fields:
    overrides.update(attention_dropout_rate=config.model.dropout_rate)
  if config.get('init_from', ''):
    cfg = _fine_tuned_config(config, overrides)
  else:
    cfg = presets.get_config(config.model.preset, **overrides)
  if config.model.dropout_rate is not None and getattr(cfg, 'activation_dropout_rate', 0.0) > 0:
    cfg = dataclasses.replace(cfg, activation_dropout_rate=config.model.dropout_rate)  # T5, BART.
  max_positions = getattr(cfg, 'max_positions', None)
  if max_positions is not None and config.seq_len > max_positions:
    raise ValueError(
      f'seq_len={config.seq_len} exceeds the {max_positions} positions of preset '
      f'{config.model.preset!r}.'
    )
  return cfg


def _fine_tuned_config(config, overrides: dict):
  """The config of `init_from`'s model with the run's dtype, dropout and adapter overrides;
  its sizes are the checkpoint's (a size set in config.model is an error)."""
  from training import pretrained

  cfg = pretrained.describe(config.init_from).config
  sizes = [
    k for k in ('num_layers', 'd_model', 'num_heads', 'mlp_dim', 'embed_dim') if k in overrides
  ]
  if sizes:
    raise ValueError(
      f'config.model.{sizes[0]} is set, but the model is sized by init_from={config.init_from}.'
    )
  if overrides['vocab_size'] != cfg.vocab_size:
    raise ValueError(
      f'The tokenizer has {overrides["vocab_size"]} pieces but init_from={config.init_from} '
      f"has {cfg.vocab_size} embeddings: use the checkpoint's tokenizer (leave "
      'data.tokenizer_path empty).'
    )
  return dataclasses.replace(cfg, **overrides)
