"""A fine-tuned sentence (pair) classifier read back from its train.py run, for the
commands that look at its answers (tools/attribution.py, tools/attack.py): its model and
params (the best checkpoint, else the newest), tokenizer, dev records and rows."""

import copy
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from data import atomic_files, tasks
from models import heads
from training import compressed_run

INPUTS = ('tokens', 'segment_ids', 'positions', 'token_types')  # A row's arrays, call order.


@dataclasses.dataclass
class Classifier:
  source: compressed_run.SourceRun
  model: heads.SequenceClassifier
  params: dict  # On the default device.
  tokenizer: object
  experiment: object  # The run's experiment (training/experiment.py).

  @property
  def description(self) -> str:
    s = self.source
    return f'{s.workdir} ({s.checkpoint} checkpoint, step {s.step})'

  def dev_records(self, count: int) -> list[dict]:
    """The first `count` records of the run's (first) evaluation split."""
    return self.experiment.documents('eval')[:count]

  def train_records(self) -> list[dict]:
    """The task's whole train split, in file order, also when the run trained on a subset
    of it (data.train_records, data.train_per_label)."""
    data = copy.deepcopy(self.source.config.data)
    data.train_records, data.train_per_label = '', 0
    return tasks.load_examples(data, 'train')

  def rows(self, pairs: list[tuple], seq_len: int = 0) -> dict:
    """{'tokens', 'segment_ids', 'positions', 'token_types'} [n, seq_len] of (text, text_b
    or None) pairs, framed as the run's rows are ([CLS] a [SEP] b [SEP]); seq_len 0: the
    run's."""
    seq_len = seq_len or self.source.config.seq_len
    encoded = [tasks.encode_pair(self.tokenizer, a, b, seq_len) for a, b in pairs]
    return {name: np.stack([e[name] for e in encoded]) for name in INPUTS}

  def token_table(self) -> np.ndarray:
    """The token-embedding table [vocab, token_dim] (float)."""
    node = self.source.params
    for name in ('encoder', 'embed', 'token', 'embedding'):
      if not isinstance(node, dict) or name not in node:
        raise ValueError(
          f'{self.source.workdir}: no float token table at encoder/embed/token/embedding '
          '(a quantized or differently named model).'
        )
      node = node[name]
    return np.asarray(node, np.float32)

  def losses(self, records: list[dict], batch_size: int = 64) -> np.ndarray:
    """[records] the model's loss on each labelled record: the cross-entropy of its gold
    label, or for a regression (one output) the squared error."""
    rows = self.rows([(r['text_a'], r['text_b']) for r in records])
    scores = in_batches(
      lambda _, inputs: outputs(self.params, inputs, model=self.model), rows, batch_size
    )  # [records, classes]
    if scores.shape[-1] == 1:
      return (scores[:, 0] - np.asarray([float(r['label']) for r in records])) ** 2
    labels = np.asarray([int(r['label']) for r in records])
    log_probs = np.asarray(jax.nn.log_softmax(scores, axis=-1))
    return -log_probs[np.arange(len(records)), labels]

  def pieces(self, tokens) -> list[str]:
    return [self.tokenizer.id_to_piece(int(t)) for t in tokens]


@functools.partial(jax.jit, static_argnames=('model',))
def outputs(params, inputs, *, model):
  """The model's [batch, classes] outputs of one batch of rows (INPUTS' arrays), float32."""
  return model.apply({'params': params}, *inputs, deterministic=True).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('model',))
def probabilities(params, inputs, *, model):
  """[batch, classes] class probabilities of one batch of rows."""
  return jax.nn.softmax(outputs(params, inputs, model=model), axis=-1)


def in_batches(function, rows: dict, batch_size: int, batch_axes=0):
  """`function(b, inputs)` over `rows` in batches of `batch_size` rows (the last one padded
  with rows of zeros, so one compilation serves all), the outputs cut to the real rows and
  concatenated along their batch axes.

  Args:
    function: (batch number, INPUTS' arrays, each [batch_size, length] int32) -> an array,
      or a tuple of them.
    rows: INPUTS -> [n, length] arrays (Classifier.rows).
    batch_size: rows per call.
    batch_axes: each output's batch axis (an int for one output, a tuple for a tuple).

  Returns:
    The output (or tuple of outputs) over all n rows, as NumPy arrays.
  """
  n = len(rows['tokens'])
  single = isinstance(batch_axes, int)
  axes = (batch_axes,) if single else tuple(batch_axes)
  pieces = [[] for _ in axes]
  for b, start in enumerate(range(0, n, batch_size)):
    real = min(batch_size, n - start)
    inputs = tuple(
      jax.numpy.asarray(
        np.pad(rows[name][start : start + real], ((0, batch_size - real), (0, 0))), np.int32
      )
      for name in INPUTS
    )
    out = function(b, inputs)
    for i, (value, axis) in enumerate(zip((out,) if single else out, axes, strict=True)):
      pieces[i].append(np.take(np.asarray(value), np.arange(real), axis=axis))
  joined = tuple(np.concatenate(p, axis=axis) for p, axis in zip(pieces, axes, strict=True))
  return joined[0] if single else joined


def load(run: str, defaults=None) -> Classifier:
  """The classifier of train.py run `run` (`defaults`: compressed_run.read_run's).

  Raises:
    FileNotFoundError: not a run, or one without a checkpoint.
    ValueError: the run trains something else than a sentence (pair) classifier.
  """
  source = compressed_run.read_run(run, defaults)
  exp = compressed_run.build_experiment(source)
  model = exp.objective.build_model(source.model_cfg)
  if not isinstance(model, heads.SequenceClassifier):
    raise ValueError(
      f'{run} trains {type(model).__name__} ({source.config.objective.module}); a sentence '
      '(pair) classifier (objectives.classification) is needed.'
    )
  return Classifier(source, model, jax.device_put(source.params), exp.tokenizer, exp)


def write_train_losses(run: str, out: str, batch_size: int = 64, defaults=None) -> np.ndarray:
  """`run`'s loss on every record of its task's whole train split (file order), written to
  `out` atomically as a curriculum scores file (one number a line, a '#' header naming the
  run): tools/difficulty.py's reference scores and tools/self_paced.py's own-loss ones.

  Raises:
    ValueError: a train record without a label.
  """
  classifier = load(run, defaults)
  records = classifier.train_records()
  if any(r.get('label') is None for r in records):
    raise ValueError(f'{run}: its train split has unlabelled records.')
  losses = classifier.losses(records, batch_size)
  header = f'# {len(losses)} train records: loss under {classifier.description}\n'
  atomic_files.write_text(out, header + ''.join(f'{v:.6g}\n' for v in losses))
  return losses
