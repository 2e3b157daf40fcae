"""The input pipeline: documents -> tokens -> packed rows -> objective batches.

Sharding. The documents are split into `num_shards` logical shards (document i
goes to shard i % num_shards); each process reads only its own shards, a
contiguous range of them (process p of P reads shards p*S/P .. (p+1)*S/P - 1). A step's global batch is the
concatenation, in shard order, of `batch_size / num_shards` rows from every
shard, so for a fixed `num_shards` the global batches, and therefore the
training run, are the same whatever the number of processes.

Determinism and resumption. Each shard's document order is a seeded shuffle,
reshuffled every epoch; corruption randomness is derived from (seed, epoch,
example id) by the objective. `Loader.get_state()` is a small JSON-able dict (per
shard: the Grain iterator state and the packing offset) saved in every
checkpoint; `set_state` makes a restored run see exactly the batches and masks
the uninterrupted run would have seen.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import grain
import numpy as np

from data import curriculum as curriculum_lib
from data import layout, word_units
from data.length_warmup import LengthWarmup, cut_rows
from data.packing import PackedRows


@dataclasses.dataclass(frozen=True)
class ShardSpec:
  """Which logical shards this process reads, and how many rows each gives a step."""

  num_shards: int
  local_shards: tuple[int, ...]
  rows_per_shard: int

  @classmethod
  def create(
    cls, batch_size: int, num_shards: int, process_index: int, process_count: int
  ) -> 'ShardSpec':
    num_shards = num_shards or process_count
    if num_shards % process_count:
      raise ValueError(
        f'data.num_shards={num_shards} must be a multiple of the {process_count} processes.'
      )
    if batch_size % num_shards:
      raise ValueError(
        f'batch_size={batch_size} cannot be split over data.num_shards={num_shards}; '
        f'use a multiple of {num_shards}.'
      )
    per_process = num_shards // process_count
    local = tuple(range(process_index * per_process, (process_index + 1) * per_process))
    return cls(num_shards, local, batch_size // num_shards)


def _epoch_documents(
  documents, *, shard: int, num_shards: int, seed: int, train: bool, curriculum=None,
  draws_per_step: int = 1,
):  # fmt: skip
  """This shard's documents (random access) and its stream of {'text', 'epoch', 'doc'}:
  shuffled afresh every epoch and repeated when training, one pass otherwise, or drawn by
  the `curriculum` (data/curriculum.py) when training with one; `doc` is the document's
  index in the whole corpus."""
  docs = grain.MapDataset.source(documents)[shard::num_shards]
  docs_per_epoch = len(docs)
  if train and curriculum is not None and docs_per_epoch:
    order = curriculum.shard_order(shard, num_shards)

    def drawn(i, _):
      j = curriculum_lib.draw(
        curriculum, order, i, seed=seed, shard=shard, draws_per_step=draws_per_step
      )
      return {'text': docs[j], 'epoch': i // docs_per_epoch, 'doc': j * num_shards + shard}

    return docs, grain.MapDataset.range(docs_per_epoch).repeat(None).map_with_index(drawn)
  # A shuffled, repeated dataset reads its parent at indices past the end (epoch * size
  # + index); the document is the index modulo the size.
  stream = docs.map_with_index(
    lambda j, text: ((j % max(docs_per_epoch, 1)) * num_shards + shard, text)
  )
  if train:
    if docs_per_epoch == 0:
      raise ValueError(
        f'Data shard {shard} of {num_shards} has no documents: the corpus has only '
        f'{len(documents)}; lower data.num_shards.'
      )
    stream = stream.shuffle(seed=seed + shard).repeat(None)  # A new order every epoch.
  stream = stream.map_with_index(
    lambda i, item: {'text': item[1], 'epoch': i // max(docs_per_epoch, 1), 'doc': item[0]}
  )
  return docs, stream


def _read(stream: grain.MapDataset) -> grain.IterDataset:
  """Reads ahead in a background thread (tokenization included when mapped before)."""
  return stream.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=16))


def _tokenized(doc: dict, tokenizer, starts_table) -> dict:
  """{'tokens', 'epoch', 'doc'} of a document, and, for a JSONL document with annotated
  spans (data/jsonl.SpannedText), 'token_arrays': per-token unit starts, one array
  per span kind, which packing carries into the rows (ERNIE's entity_starts, ...); for an
  OCR page (data/layout.LaidOutText), 'token_arrays' {'boxes': [n, 4]}."""
  text = doc['text']
  if isinstance(text, layout.LaidOutText):
    ids, boxes = layout.encode_words(tokenizer, text)
    return {'tokens': ids, 'epoch': doc['epoch'], 'doc': doc['doc'],
            'token_arrays': {'boxes': boxes}}  # fmt: skip
  spans = getattr(text, 'spans', None)
  if not spans:
    return {'tokens': tokenizer.encode(text), 'epoch': doc['epoch'], 'doc': doc['doc']}
  ids, ends = tokenizer.encode_with_offsets(text)
  arrays = {
    key: word_units.span_unit_starts(ids, ends, s, starts_table()) for key, s in spans.items()
  }
  return {'tokens': ids, 'epoch': doc['epoch'], 'doc': doc['doc'], 'token_arrays': arrays}


def _shard_rows(
  documents: Sequence[str],
  tokenizer,
  *,
  shard: int,
  num_shards: int,
  seq_len: int,
  framing: tuple[str, str],
  seed: int,
  train: bool,
  make_rows: Callable | None,
  curriculum=None,
  draws_per_step: int = 1,
) -> grain.IterDataset:
  docs, stream = _epoch_documents(
    documents, shard=shard, num_shards=num_shards, seed=seed, train=train,
    curriculum=curriculum, draws_per_step=draws_per_step,
  )  # fmt: skip
  if make_rows is not None:
    return make_rows(
      _read(stream), docs, tokenizer, seq_len=seq_len, seed=seed, shard=shard, num_shards=num_shards
    )
  # The word-start table is built once per shard, and only if a document has spans.
  starts_table = functools.cache(lambda: word_units.word_start_table(tokenizer))
  tokens = _read(stream.map(lambda doc: _tokenized(doc, tokenizer, starts_table)))
  prefix_id, suffix_id = (getattr(tokenizer, name) for name in framing)
  return PackedRows(
    tokens,
    seq_len=seq_len,
    prefix_id=prefix_id,
    suffix_id=suffix_id,
    shard_index=shard,
    num_shards=num_shards,
  )


class Loader:
  """Iterator over this process's part of each global batch (numpy dicts)."""

  def __init__(
    self,
    documents: Sequence[str],
    tokenizer,
    *,
    shards: ShardSpec,
    seq_len: int,
    framing: tuple[str, str],
    preprocess: Callable[[dict], dict],
    seed: int,
    train: bool,
    pad_after_end: bool = False,
    make_rows: Callable | None = None,
    curriculum: curriculum_lib.Curriculum | None = None,
    length_warmup: LengthWarmup | None = None,
  ):
    """Args:
    documents: random-access document strings (data/sources.py).
    tokenizer: data/tokenizers.py Tokenizer.
    shards: this process's shards and rows per shard per step.
    seq_len: tokens per row.
    framing: names of the tokenizer ids that open and close a segment.
    preprocess: the objective's host-side batch function.
    seed: data order seed.
    train: shuffle and repeat forever; otherwise one pass, the last batch padded.
    pad_after_end: after one pass, yield all-padding batches instead of stopping,
      so that processes whose shards end at different steps stay in lockstep
      (the evaluation loop stops when a global batch holds no real row).
    make_rows: the objective's own row builder, `make_rows(stream, docs, tokenizer,
      *, seq_len, seed, shard, num_shards)` (data/sentence_pairs.py), instead of
      packing; `stream` yields {'text', 'epoch', 'doc'}, `docs` is the shard's
      random-access document list.
    curriculum: training draws easy documents first (data/curriculum.py), a step being
      `shards.rows_per_shard` draws; evaluation ignores it.
    length_warmup: batch b's rows are cut to length_warmup.length(b) tokens before the
      preprocess (data/length_warmup.py); the batch count is then part of the state.
    """
    self._shards = shards
    self._seq_len = seq_len
    self._preprocess = preprocess
    self._pad_after_end = pad_after_end
    self._iters = []
    for shard in shards.local_shards:
      rows = _shard_rows(
        documents,
        tokenizer,
        shard=shard,
        num_shards=shards.num_shards,
        seq_len=seq_len,
        framing=framing,
        seed=seed,
        train=train,
        make_rows=make_rows,
        curriculum=curriculum,
        draws_per_step=shards.rows_per_shard,
      )
      self._iters.append(iter(rows))
    self._row_keys = None  # Keys and shapes of a real row, for the padding rows.
    self._warmup = length_warmup
    self._batches = 0  # Yielded so far: the step of the next batch, for the warm-up.

  def _rows(self, it) -> list[dict]:
    rows = []
    for _ in range(self._shards.rows_per_shard):
      try:
        rows.append(next(it))
      except StopIteration:
        break
    return rows

  def _padding_row(self) -> dict:
    zeros = np.zeros(self._seq_len, np.int32)
    row = dict(tokens=zeros, segment_ids=zeros, positions=zeros)
    if self._row_keys is not None:  # Whatever else the rows carry (token types, labels).
      row = {key: np.zeros_like(value) for key, value in self._row_keys.items()}
    return dict(row, epoch=np.int64(0), example_id=np.int64(-1))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts = [self._rows(it) for it in self._iters]
    if not any(parts) and not self._pad_after_end:
      raise StopIteration
    real = next((row for part in parts for row in part), None)
    if real is not None and self._row_keys is None:
      self._row_keys = {k: v for k, v in real.items() if k not in ('epoch', 'example_id')}
    rows = []
    for part in parts:  # Evaluation pads exhausted shards with empty rows (weight 0).
      rows += part + [self._padding_row()] * (self._shards.rows_per_shard - len(part))
    batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    if self._warmup is not None:
      batch = cut_rows(batch, self._warmup.length(self._batches), self._seq_len)
    self._batches += 1
    return self._preprocess(batch)

  def get_state(self) -> dict:
    """{'shards': {shard index (str): iterator state}} for this process's shards, and with
    a length warm-up {'batches': yielded so far}."""
    shards = self._shards.local_shards
    state = {'shards': {str(s): it.get_state() for s, it in zip(shards, self._iters, strict=True)}}
    if self._warmup is not None:
      state['batches'] = self._batches
    return state

  def set_state(self, state: dict):
    """Restores this process's shards from a state holding (at least) all of them."""
    saved = state['shards']
    for shard, it in zip(self._shards.local_shards, self._iters, strict=True):
      if str(shard) not in saved:
        raise ValueError(
          f'The checkpoint has no state for data shard {shard} (it holds {len(saved)} '
          f'shards); resume with the data.num_shards it was written with.'
        )
      it.set_state(saved[str(shard)])
    if self._warmup is not None:
      if 'batches' not in state:
        raise ValueError(
          "The checkpoint's data state has no batch count: it was written by a run without "
          'length_warmup, which cannot be switched on when resuming.'
        )
      self._batches = int(state['batches'])
