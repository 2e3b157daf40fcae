"""Builds the parts of a run from its config: tokenizer, objective, model, loaders.

Shared by training, evaluation, tools/show.py and the tests, so that all of them see
the same model and the same batches for the same config. Touches no device.
"""

import dataclasses
import functools
import math

from data import curriculum as curriculum_lib
from data import loader as loader_lib
from data import sources, tasks, tokenizer_api, tokenizers
from data.length_warmup import LengthWarmup
from models.transformer import TransformerConfig
from objectives import api
from training import model_setup


@dataclasses.dataclass
class Experiment:
  """Everything a run builds from its config before touching devices."""

  config: object
  tokenizer: tokenizer_api.Tokenizer
  objective: api.Objective  # The objective module, or what its `configure` returned.
  model_cfg: TransformerConfig
  notes: list[str] = dataclasses.field(default_factory=list)  # Lines for the training log.
  teacher_cfg: TransformerConfig | None = None  # A distillation run's teacher (config.teacher).

  @property
  def model(self):
    """The model the run trains (a distillation student is sized against its teacher)."""
    return api.student_model(self.objective, self.model_cfg, self.teacher_cfg)

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
    make_rows = api.row_builder(self.objective)  # Task rows, sentence pairs (NSP / SOP).
    if make_rows is not None:
      make_rows = functools.partial(make_rows, self.config.objective)
    documents = self.documents(split, eval_split)
    if train and self.config.curriculum.difficulty:
      kwargs['curriculum'] = self.curriculum(documents)
    if train and self.config.length_warmup.steps:
      kwargs['length_warmup'] = self.length_warmup()
    return loader_lib.Loader(
      documents,
      self.tokenizer,
      shards=shards,
      seq_len=api.packed_length(self.objective, self.config.objective, self.config.seq_len),
      framing=self.objective.FRAMING,
      preprocess=self.objective.make_preprocess(
        self.config.objective, self.tokenizer, self.config.seed
      ),
      seed=self.config.seed,
      train=train,
      make_rows=make_rows,
      **kwargs,
    )

  def curriculum(self, documents) -> curriculum_lib.Curriculum:
    """The config's curriculum over the train `documents` (data/curriculum.py)."""
    cfg = self.config.curriculum
    if cfg.difficulty == 'length':
      difficulty = curriculum_lib.token_lengths(documents, self.tokenizer)
    else:
      difficulty = curriculum_lib.read_scores(cfg.difficulty, len(documents))
    return curriculum_lib.Curriculum(
      difficulty, cfg.schedule, cfg.steps or max(self.config.total_steps // 2, 1),
      initial=cfg.initial, stages=cfg.stages,
    )  # fmt: skip

  def length_warmup(self) -> LengthWarmup | None:
    """The config's sequence-length warm-up (data/length_warmup.py), or None.

    Raises:
      ValueError: an objective that builds its own rows or packs rows of another length
        than seq_len (task rows, sentence pairs, T5's span corruption).
    """
    cfg, objective = self.config, self.objective
    if not cfg.length_warmup.steps:
      return None
    packed = api.packed_length(objective, cfg.objective, cfg.seq_len)
    if api.row_builder(objective) is not None or packed != cfg.seq_len:
      raise ValueError(
        f'length_warmup.steps={cfg.length_warmup.steps}: the warm-up cuts packed rows of '
        f'seq_len tokens; {cfg.objective.module} builds its own rows or packs {packed}.'
      )
    w = cfg.length_warmup
    return LengthWarmup(cfg.seq_len, w.steps, w.start, w.multiple)


def build(config, workdir: str, *, process_index: int = 0, barrier=None) -> Experiment:
  """Loads (or trains, once, into the workdir) the tokenizer and sizes the model."""
  objective = api.load(config.objective.module, config.objective)
  source = model_setup.tokenizer_source(config)
  if source and not config.data.tokenizer_path:  # Fine-tuning or distilling: the checkpoint's.
    tokenizer = tokenizers.load_tokenizer(model_setup.describe(source).tokenizer_path)
  elif config.data.source in tasks.SOURCES and not config.data.tokenizer_path:
    raise ValueError(
      f'data.source={config.data.source!r} is a fine-tuning task: set config.init_from (its '
      'tokenizer is used) or data.tokenizer_path.'
    )
  else:
    tokenizer = tokenizers.get_or_train_tokenizer(
      config, workdir, process_index=process_index, barrier=barrier
    )
  model_cfg = model_setup.model_config(config, tokenizer.vocab_size)
  if api.distills(objective) != bool(config.teacher):
    raise ValueError(
      f'config.teacher={config.teacher!r} with objective.module={config.objective.module!r}: '
      'a teacher is what objectives.distill trains against, and it needs one.'
    )
  teacher_cfg = model_setup.teacher_config(config) if config.teacher else None
  exp = Experiment(config, tokenizer, objective, model_cfg, teacher_cfg=teacher_cfg)
  # Nothing left to size when both lengths are given in steps: the records need not be read.
  sized = config.total_steps and (config.eval_every_steps or not config.evals_per_epoch)
  if config.num_epochs and not sized:
    exp.notes += size_epochs(config, len(exp.documents('train')))
  elif config.num_epochs:
    exp.notes.append(f'total_steps={config.total_steps} is set: num_epochs is not used.')
  elif config.evals_per_epoch:
    raise ValueError(
      f'evals_per_epoch={config.evals_per_epoch} needs num_epochs (the run is sized in steps).'
    )
  if not config.checkpoint_every_steps:
    config.checkpoint_every_steps = config.eval_every_steps or config.total_steps
  return exp


def size_epochs(config, num_records: int) -> list[str]:
  """Sizes a run given in epochs over `num_records` train records, in place: `total_steps`
  = ceil(num_epochs x records / batch_size) and, with `evals_per_epoch`, `eval_every_steps`
  = steps per epoch / evals_per_epoch. A restarted run reads the same records and gets the
  same figures. A `total_steps` (or `eval_every_steps`) that is set wins over the epochs,
  so `--config.total_steps=100` shortens a recipe; the notes returned say so.

  Returns:
    Lines for the training log.

  Raises:
    ValueError: num_epochs with a pretraining source (its rows are packed, not records).
  """
  if config.data.source not in tasks.SOURCES:
    raise ValueError(
      f'num_epochs={config.num_epochs} sizes fine-tuning runs (task records); '
      f'data.source={config.data.source!r} packs documents: set total_steps instead.'
    )
  steps_per_epoch = max(math.ceil(num_records / config.batch_size), 1)
  notes = [f'{num_records} train records: {steps_per_epoch} steps per epoch.']
  if config.total_steps:
    notes.append(f'total_steps={config.total_steps} is set: num_epochs is not used.')
  else:
    config.total_steps = math.ceil(config.num_epochs * num_records / config.batch_size)
    notes.append(f'num_epochs={config.num_epochs:g}: total_steps={config.total_steps}.')
  if config.evals_per_epoch:
    if config.eval_every_steps:
      notes.append(
        f'eval_every_steps={config.eval_every_steps} is set: evals_per_epoch is not used.'
      )
    else:
      config.eval_every_steps = max(round(steps_per_epoch / config.evals_per_epoch), 1)
      notes.append(
        f'evals_per_epoch={config.evals_per_epoch:g}: eval_every_steps={config.eval_every_steps}.'
      )
  return notes
