"""Builds the parts of a run from its config: tokenizer, objective, model, loaders.

Shared by train.py, eval.py, data/show.py and the tests, so that all of them see
the same model and the same batches for the same config.
"""

import dataclasses
import importlib
from types import ModuleType

from data import loader as loader_lib
from data import sources, tokenizers
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
  if config.model.dropout_rate is not None:
    overrides.update(dropout_rate=config.model.dropout_rate)
    overrides.update(attention_dropout_rate=config.model.dropout_rate)
  cfg = presets.get_config(config.model.preset, **overrides)
  if config.seq_len > cfg.max_len:
    raise ValueError(
      f'seq_len={config.seq_len} exceeds the {cfg.max_len} positions of preset '
      f'{config.model.preset!r}.'
    )
  return cfg


@dataclasses.dataclass
class Experiment:
  """Everything a run builds from its config before touching devices."""

  config: object
  tokenizer: tokenizers.Tokenizer
  objective: ModuleType
  model_cfg: TransformerConfig

  @property
  def model(self):
    return self.objective.build_model(self.model_cfg)

  def loader(self, split: str, shards: loader_lib.ShardSpec, **kwargs) -> loader_lib.Loader:
    """The loader of `split` ('train' or 'eval') for this process's shards."""
    train = split == 'train'
    return loader_lib.Loader(
      sources.load_documents(self.config.data, split),
      self.tokenizer,
      shards=shards,
      seq_len=self.config.seq_len,
      framing=self.objective.FRAMING,
      preprocess=self.objective.make_preprocess(
        self.config.objective, self.tokenizer, self.config.seed
      ),
      seed=self.config.seed,
      train=train,
      **kwargs,
    )


def build(config, workdir: str, *, process_index: int = 0, barrier=None) -> Experiment:
  """Loads (or trains, once, into the workdir) the tokenizer and sizes the model."""
  objective = load_objective(config.objective.module)
  tokenizer = tokenizers.get_or_train_tokenizer(
    config, workdir, process_index=process_index, barrier=barrier
  )
  return Experiment(config, tokenizer, objective, model_config(config, tokenizer.vocab_size))
