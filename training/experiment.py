"""Builds the parts of a run from its config: tokenizer, objective, model, loaders.

Shared by train.py, eval.py, data/show.py and the tests, so that all of them see
the same model and the same batches for the same config.
"""

import dataclasses
import functools

from data import loader as loader_lib
from data import sources, tokenizers
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

  def loader(self, split: str, shards: loader_lib.ShardSpec, **kwargs) -> loader_lib.Loader:
    """The loader of `split` ('train' or 'eval') for this process's shards."""
    train = split == 'train'
    make_rows = getattr(self.objective, 'make_rows', None)  # Sentence pairs (NSP / SOP).
    if make_rows is not None:
      make_rows = functools.partial(make_rows, self.config.objective)
    return loader_lib.Loader(
      sources.load_documents(self.config.data, split),
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
  tokenizer = tokenizers.get_or_train_tokenizer(
    config, workdir, process_index=process_index, barrier=barrier
  )
  return Experiment(config, tokenizer, objective, model_config(config, tokenizer.vocab_size))
