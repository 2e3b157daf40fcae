"""The objective module and the model config of a run, without the data stack.

Kept apart from training/experiment.py (which imports the Grain loader and the
tokenizers) so that benchmarks and model-only tools import no TensorFlow, TFDS,
Grain or ml_collections.
"""

import importlib
from types import ModuleType

from models import presets
from models.transformer import TransformerConfig

_OBJECTIVE_API = ('FRAMING', 'build_model', 'make_preprocess', 'loss_fn', 'eval_summary')


def load_objective(module_path: str) -> ModuleType:
  """Imports the objective module named in `config.objective.module`."""
  try:
    module = importlib.import_module(module_path)
  except ModuleNotFoundError as e:
    raise ValueError(
      f'objective.module={module_path!r} cannot be imported ({e}); '
      "expected a module path such as 'objectives.mlm' or 'objectives.clm'."
    ) from e
  missing = [name for name in _OBJECTIVE_API if not hasattr(module, name)]
  if missing:
    raise ValueError(f'Objective module {module_path!r} lacks {", ".join(missing)}.')
  return module


def model_config(config, vocab_size: int) -> TransformerConfig:
  """The preset named by `config.model.preset`, sized for the tokenizer and run."""
  overrides = dict(
    vocab_size=vocab_size,
    dtype=config.model.dtype,
    param_dtype=config.model.param_dtype,
    attention_impl=config.model.attention_impl or None,
  )
  for field in ('num_layers', 'd_model', 'num_heads', 'mlp_dim', 'embed_dim'):
    if config.model[field] is not None:
      overrides[field] = config.model[field]
  if config.model.dropout_rate is not None:
    overrides.update(dropout_rate=config.model.dropout_rate)
    overrides.update(attention_dropout_rate=config.model.dropout_rate)
  cfg = presets.get_config(config.model.preset, **overrides)
  if config.seq_len > cfg.max_positions:
    raise ValueError(
      f'seq_len={config.seq_len} exceeds the {cfg.max_positions} positions of preset '
      f'{config.model.preset!r}.'
    )
  return cfg
