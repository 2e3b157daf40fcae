"""Builds the parts of a run from its config: tokenizer, objective, model, loaders.

Shared by train.py, eval.py, data/show.py and the tests, so that all of them see
the same model and the same batches for the same config.
"""

import dataclasses
import functools

from data import loader as loader_lib
from data import sources, tasks, tokenizers
from models.transformer import TransformerConfig
from training.model_setup import load_objective, model_config, packed_length


@dataclasses.dataclass
class Experiment:
  """Everything a run builds from its config before touching devices."""

  config: object
  tokenizer: tokenizers.Tokenizer
  objective: object  # The objective module, or what its `configure` returned.
  model_cfg: TransformerConfig

  @property
  def model(self):
    return self.objective.build_model(self.model_cfg)

  def documents(self, split: str, eval_split: str | None = None):
    """The documents (task records, for a fine-tuning source) of `split`; `eval_split`
    names one of a task's evaluation splits (data/tasks.py), default the first."""
    if eval_split is not None:
      return tasks.load_examples(self.config.data, split, eval_split)
    return sources.load_documents(self.config.data, split)

  def loader(
    self, split: str, shards: loader_lib.ShardSpec, eval_split: str | None = None, **kwargs
  ) -> loader_lib.Loader:
    """The loader of `split` ('train' or 'eval') for this process's shards."""
    train = split == 'train'
    make_rows = getattr(self.objective, 'make_rows', None)  # Sentence pairs (NSP / SOP).
    if make_rows is not None:
      make_rows = functools.partial(make_rows, self.config.objective)
    return loader_lib.Loader(
      self.documents(split, eval_split),
      self.tokenizer,
      shards=shards,
      seq_len=packed_length(self.objective, self.config),
      framing=self.objective.FRAMING,
      preprocess=self.objective.make_preprocess(
        self.config.objective, self.tokenizer, self.config.seed
      ),
      seed=self.config.seed,
      train=train,
      make_rows=make_rows,
      **kwargs,
    )


def build(config, workdir: str, *, process_index: int = 0, barrier=None) -> Experiment:
  """Loads (or trains, once, into the workdir) the tokenizer and sizes the model."""
  objective = load_objective(config.objective.module, config.objective)
  if config.get('init_from', '') and not config.data.tokenizer_path:
    from training import pretrained  # Fine-tuning: the checkpoint's own tokenizer.

    tokenizer = tokenizers.load_tokenizer(pretrained.describe(config.init_from).tokenizer_path)
  elif config.data.source in tasks.SOURCES and not config.data.tokenizer_path:
    raise ValueError(
      f'data.source={config.data.source!r} is a fine-tuning task: set config.init_from (its '
      'tokenizer is used) or data.tokenizer_path.'
    )
  else:
    tokenizer = tokenizers.get_or_train_tokenizer(
      config, workdir, process_index=process_index, barrier=barrier
    )
  return Experiment(config, tokenizer, objective, model_config(config, tokenizer.vocab_size))
