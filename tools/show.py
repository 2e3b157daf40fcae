"""Shows what the model is fed: decoded rows of a config's batches, corruption marked.

  python -m tools.show --config configs/quickstart.py --num_examples 4
  python -m tools.show --config configs/quickstart.py --config.model.preset=gpt2-tiny \\
      --config.objective.module=objectives.clm --json

The batches are exactly the training (or `--split eval`) batches of the config,
for one process: same tokenizer, packing, shards and derived masks. Without
`--workdir` the tokenizer lives in a temporary directory, so a SentencePiece
model is trained on the fly when `data.tokenizer_path` is empty.

Plain output, per row: a header with its segment count and predicted
positions, then one line per segment. For a masked objective a predicted
position reads `[MASK→original]` if it was replaced by [MASK],
`{random→original}` if replaced by a random token and `<original>` if kept;
`‖k` marks where the token type changes to k inside a segment (sentence B of a
pair, the second language of a translation pair) and NSP / SOP rows show their
label, UniLM segments their attention kind; for a causal one the segments are shown as text with their predicted count;
for token tagging (NER) the sentence with /TAG after each labelled word; for extractive
question answering each window as `question | window` with the gold answer [[marked]];
for an encoder-decoder (denoising) each packed pair as its encoder input and its
decoder target. The objective module's `SHOW` picks the rendering.
`--json`: one object per row holding every array of the batch under its own
name, plus `tokens` and `targets_pieces` (the pieces of `inputs` and `targets`); tagging
rows get `target_tags` (tag names at the labelled positions) instead of `targets_pieces`.
"""

import functools
import json
import tempfile

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from data import loader as loader_lib
from data import tokenizers
from objectives import api, unilm
from training import experiment


class _PieceText:
  """Turns ids into display text: SentencePiece '▁' and WordPiece '##' become spacing."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, names: dict[int, str] | None = None):
    self._tokenizer = tokenizer
    self._sentencepiece = isinstance(tokenizer, tokenizers.SentencePieceTokenizer)
    self._special = set(int(i) for i in tokenizer.special_ids)
    self._names = names or {}  # Ids the objective gives a role (T5's sentinels).

  def __call__(self, token_id: int) -> tuple[bool, str]:
    """(space before it, its text) for one id."""
    if int(token_id) in self._names:
      return True, self._names[int(token_id)]
    piece = self._tokenizer.id_to_piece(int(token_id))
    if int(token_id) in self._special:
      return True, piece
    if self._sentencepiece:  # A bare '▁' is a space before a piece of its own.
      return (True, piece[1:]) if piece.startswith('▁') else (False, piece)
    return (False, piece[2:]) if piece.startswith('##') else (True, piece)

  def marked(self, token_id: int) -> tuple[bool, str]:
    """Like __call__, but never empty: a bare '▁' stays visible inside a mark."""
    space, shown = self(token_id)
    return space, shown or self._tokenizer.id_to_piece(int(token_id))

  def join(self, ids) -> str:
    parts = [self(i) for i in ids]
    return ''.join((' ' if space else '') + text for space, text in parts).strip()


def _plural(n: int, noun: str) -> str:
  return f'{n} {noun}' if n == 1 else f'{n} {noun}s'


def _segments(segment_ids: np.ndarray) -> list[np.ndarray]:
  """Position indices of each segment of one row, in order (padding excluded)."""
  return [np.flatnonzero(segment_ids == s) for s in np.unique(segment_ids[segment_ids > 0])]


def _render_masked(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  inputs, targets = batch['inputs'][row], batch['targets'][row]
  predicted = batch['weights'][row] > 0
  masked = predicted & (inputs == tokenizer.mask_id)
  replaced = predicted & ~masked & (inputs != targets)
  kept = predicted & ~masked & ~replaced
  segments = _segments(batch['segment_ids'][row])
  lines = [
    f'{_plural(len(segments), "segment")}, {_plural(int(predicted.sum()), "predicted position")} '
    f'({int(masked.sum())} [MASK], {int(replaced.sum())} random, {int(kept.sum())} kept), '
    f'{int((batch["segment_ids"][row] == 0).sum())} padding'
  ]
  if 'pair_labels' in batch:  # NSP / SOP rows (data/sentence_pairs.py).
    label = int(batch['pair_labels'][row])
    lines[0] += f'; pair label {label} ({"B does not follow A" if label else "B follows A"})'
  types = batch.get('token_types')
  for number, positions in enumerate(segments, 1):
    out = []
    for p in positions:
      if types is not None and p > positions[0] and types[row][p] != types[row][p - 1]:
        out.append(f' ‖{int(types[row][p])}')  # Where segment B (or another language) starts.
      space, original = text.marked(targets[p])
      if masked[p]:
        shown = f'[MASK→{original}]'
      elif replaced[p]:
        shown = f'{{{text.marked(inputs[p])[1]}→{original}}}'
      elif kept[p]:
        shown = f'<{original}>'
      else:
        space, shown = text(inputs[p])
      out.append((' ' if space else '') + shown)
    kind = ''
    if 'lm_kinds' in batch:  # UniLM: the attention mask this segment was trained under.
      kind = ', ' + unilm.KINDS[int(batch['lm_kinds'][row][positions[0]])]
    lines.append(f'  segment {number} ({len(positions)} tokens{kind}): ' + ''.join(out).strip())
  return lines


def _render_causal(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  del tokenizer  # The pieces are enough.
  weights = batch['weights'][row]
  segments = _segments(batch['segment_ids'][row])
  lines = [
    f'{_plural(len(segments), "segment")}, '
    f'{_plural(int((weights > 0).sum()), "predicted position")}, '
    f'{int((batch["segment_ids"][row] == 0).sum())} padding'
  ]
  for number, positions in enumerate(segments, 1):
    lines.append(
      f'  segment {number} ({len(positions)} tokens, {int((weights[positions] > 0).sum())} '
      f'predicted): ' + text.join(batch['inputs'][row][positions])
    )
  return lines


def _render_seq2seq(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  """Each packed pair: the encoder's (corrupted) text, then the decoder's target."""
  del tokenizer  # The pieces are enough.
  segments = _segments(batch['segment_ids'][row])
  targets = _segments(batch['decoder_segment_ids'][row])
  weights = batch['weights'][row]
  lines = [
    f'{_plural(len(segments), "segment")}, '
    f'{_plural(int((weights > 0).sum()), "predicted position")}, '
    f'{int((batch["segment_ids"][row] == 0).sum())} encoder padding'
  ]
  for number, (source, target) in enumerate(zip(segments, targets, strict=True), 1):
    lines.append(
      f'  segment {number} encoder ({len(source)} tokens): '
      + text.join(batch['inputs'][row][source])
    )
    lines.append(
      f'  segment {number} decoder ({len(target)} tokens): '
      + text.join(batch['targets'][row][target])
    )
  return lines


def _render_pairs(batch: dict, row: int, tokenizer, text: _PieceText, shown: int = 6) -> list[str]:
  """word2vec: the kept words of each segment, then a few centers with their context
  words and the noise words drawn for the first context slot."""
  del tokenizer  # The pieces are enough.
  lines = _render_causal(batch, row, None, text)
  centers = np.flatnonzero(batch['weights'][row] > 0)[:shown]
  for p in centers:
    context = batch['contexts'][row, p][batch['context_weights'][row, p] > 0]
    noise = batch['negatives'][row, p, 0]
    lines.append(
      f'  center {text.join([batch["inputs"][row, p]])!r}: context '
      f'[{", ".join(text.join([i]) for i in context)}] | noise '
      f'[{", ".join(text.join([i]) for i in noise)}]'
    )
  return lines


def _render_example(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  """A fine-tuning example: its label, then its text with ‖1 where the second text starts."""
  del tokenizer  # The pieces are enough.
  real = batch['segment_ids'][row] > 0
  ids, types = batch['inputs'][row][real], batch['token_types'][row][real]
  first_b = int(np.argmax(types == 1)) if (types == 1).any() else len(ids)
  label = float(batch['label'][row])
  shown = f'{label:g}' if label != int(label) else str(int(label))
  body = text.join(ids[:first_b]) + (
    ' ‖1 ' + text.join(ids[first_b:]) if first_b < len(ids) else ''
  )
  return [
    f'label {shown}, example id {int(batch["example_id"][row])}, {len(ids)} tokens',
    '  ' + body,
  ]


def _render_episode(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  """A meta-learning episode: each record's class position, support or query, and text."""
  del tokenizer
  lines = [f'{batch["onehot"].shape[-1]}-way episode, example id {int(batch["example_id"][row])}']
  for m in range(batch['inputs'].shape[1]):
    real = batch['segment_ids'][row, m] > 0
    role = 'query' if batch['query'][row, m] else 'support'
    lines.append(f'  class {int(np.argmax(batch["onehot"][row, m]))} {role}: '
                 + text.join(batch['inputs'][row, m][real]))  # fmt: skip
  return lines


def _render_queries(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  """NER as MRC: each typed sub-row's query | sentence, [[...]] around its gold entities."""
  del tokenizer
  lines = [f'{batch["inputs"].shape[1]} queries, example id {int(batch["example_id"][row])}']
  for t in range(batch['inputs'].shape[1]):
    real = batch['segment_ids'][row, t] > 0
    ids, types = batch['inputs'][row, t], batch['token_types'][row, t]
    query = ids[real & (types == 0)][1:-1]
    marked = []
    for p in np.flatnonzero(real & (types == 1))[:-1]:
      piece = text.join(ids[p : p + 1])
      opened = '[[' if batch['starts'][row, t, p] else ''
      closed = ']]' if batch['ends'][row, t, p] else ''
      marked.append(opened + piece + closed)
    lines.append(f'  {text.join(query)} | ' + ' '.join(marked))
  return lines


def _render_tagging(
  batch: dict, row: int, tokenizer, text: _PieceText, labels: tuple[str, ...] | None = None
) -> list[str]:
  """A tagged sentence: each word's pieces, then /TAG after a word whose first sub-token
  carries a label (weight > 0). `labels` names the tag ids (the objective's label set);
  without it the ids are shown."""
  del tokenizer  # The pieces are enough.
  real = np.flatnonzero(batch['segment_ids'][row] > 0)
  inputs, targets, weights = batch['inputs'][row], batch['targets'][row], batch['weights'][row]
  out, pending = [], ''
  for p in real:
    space, shown = text(inputs[p])
    if space and pending:  # The labelled word ended at the previous piece.
      out.append(pending)
      pending = ''
    out.append((' ' if space else '') + shown)
    if weights[p] > 0:
      tag = int(targets[p])
      pending = '/' + (labels[tag] if labels is not None else str(tag))
  out.append(pending)
  return [
    f'example id {int(batch["example_id"][row])}, {len(real)} tokens, '
    f'{_plural(int((weights > 0).sum()), "labelled word")}',
    '  ' + ''.join(out).strip(),
  ]


def _render_spans(batch: dict, row: int, tokenizer, text: _PieceText) -> list[str]:
  """A question-answering window: the question, then the window's text with the gold
  answer's tokens between [[ and ]], or '(no answer: [CLS])' when it points at [CLS]."""
  del tokenizer  # The pieces are enough.
  example = int(batch['example_id'][row])
  real = np.flatnonzero(batch['segment_ids'][row] > 0)
  if example < 0 or not len(real):
    return ['padding row (example id -1, no tokens)']
  inputs, types = batch['inputs'][row], batch['token_types'][row]
  window = real[types[real] == 1][:-1]  # The window's tokens, its closing [SEP] left out.
  question = real[types[real] == 0][1:-1]  # Between [CLS] and [SEP].
  start, end = int(batch['start_positions'][row]), int(batch['end_positions'][row])
  if start == 0:
    answer = '(no answer: [CLS])'
    body = text.join(inputs[window])
  else:
    answer = f'answer at tokens {start}..{end}'
    body = ' '.join(
      part
      for part in (
        text.join(inputs[window[window < start]]),
        '[[' + text.join(inputs[start : end + 1]) + ']]',
        text.join(inputs[window[window > end]]),
      )
      if part
    )
  weight = float(batch['weight'][row])
  return [
    f'question {example}, window {int(batch["feature_index"][row])}, {len(real)} tokens, '
    f'{answer}' + ('' if weight > 0 else ' (answer text not found: weight 0)'),
    '  ' + text.join(inputs[question]) + ' | ' + body,
  ]


# Each rendering and its legend, by the objective's SHOW.
_RENDERERS = {
  'masked': _render_masked,
  'causal': _render_causal,
  'seq2seq': _render_seq2seq,
  'pairs': _render_pairs,
  'example': _render_example,
  'tagging': _render_tagging,
  'spans': _render_spans,
  'episodes': _render_episode,
  'queries': _render_queries,
}
_MARKS = {
  'masked': 'predicted positions: [MASK→original], {random→original}, <kept>',
  'causal': 'next-token prediction within each segment',
  'seq2seq': 'encoder input (corrupted) and decoder target of each packed pair',
  'pairs': 'kept words of each segment (centers with a context counted), then sample centers',
  'example': 'one task example per row: its label and its text (‖1: the second text)',
  'tagging': 'one sentence per row: /TAG after each labelled word (tag of its first sub-token)',
  'spans': 'one window per row: question | window, the gold answer [[marked]]',
  'episodes': "one N-way K-shot episode per row: each record's class, support or query, text",
  'queries': 'one sentence per row, asked once per entity type: query | sentence, [[entity]]',
}


def _json_line(batch: dict, row: int, example: int, tokenizer, kind: str = '', labels=None) -> str:
  """One row as JSON. `kind` is the objective's SHOW: a tagging row's targets are tag ids,
  so it gets 'target_tags' (tag names at labelled positions, null elsewhere) instead of
  'targets_pieces'; `labels` names the tag ids (ids are kept as strings without it)."""
  record = {'example': example}
  for name, value in batch.items():
    record[name] = np.asarray(value)[row].tolist()  # Ints stay ints, float weights floats.
  record['tokens'] = [tokenizer.id_to_piece(i) for i in batch['inputs'][row]]
  if kind == 'tagging':
    name = (lambda t: labels[t]) if labels is not None else str  # noqa: E731
    record['target_tags'] = [
      name(int(t)) if w > 0 else None
      for t, w in zip(batch['targets'][row], batch['weights'][row], strict=True)
    ]
  elif 'targets' in batch:  # Fine-tuning rows carry labels instead.
    record['targets_pieces'] = [tokenizer.id_to_piece(i) for i in batch['targets'][row]]
  return json.dumps(record, ensure_ascii=False)


def show(
  config, workdir: str, num_examples: int = 4, as_json: bool = False, split: str = 'train'
) -> list[str]:
  """The output lines for the first `num_examples` rows of `split`, as one process sees them.

  Args:
    config: The experiment config.
    workdir: Directory of the tokenizer (trained there when `data.tokenizer_path` is empty).
    num_examples: Rows to show (fewer if an eval split ends first).
    as_json: One JSON object per row instead of the annotated text.
    split: 'train' or 'eval'.

  Returns:
    The lines to print, without newlines.
  """
  exp = experiment.build(config, workdir)
  tokenizer = exp.tokenizer
  shards = loader_lib.ShardSpec.create(config.batch_size, config.data.num_shards, 0, 1)
  loader = exp.loader(split, shards)
  names = api.show_names(exp.objective, config.objective, tokenizer, config.seq_len)
  text = _PieceText(tokenizer, names)
  kind = exp.objective.SHOW
  labels = api.tag_names(exp.objective)
  render = _RENDERERS[kind]
  if kind == 'tagging':
    render = functools.partial(_render_tagging, labels=labels)
  lines = []
  if not as_json:
    marks = _MARKS[kind]
    lines.append(
      f'# {config.objective.module} on the {split} split, {config.seq_len} tokens per row, '
      f'tokenizer {tokenizer.path} ({tokenizer.vocab_size} pieces); {marks}'
    )
  example = 0
  for batch_index, batch in enumerate(loader):
    for row in range(batch['inputs'].shape[0]):
      if example == num_examples:
        return lines
      if as_json:
        lines.append(_json_line(batch, row, example, tokenizer, kind, labels))
      else:
        body = render(batch, row, tokenizer, text)
        lines.append(f'example {example} (batch {batch_index}, row {row}): {body[0]}')
        lines.extend(body[1:])
      example += 1
  return lines


def _define_flags():
  """Command-line flags, defined only when run as a script (so importing `show` is free)."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
  flags.DEFINE_integer('num_examples', 4, 'Rows to show.')
  flags.DEFINE_bool('json', False, 'One JSON object per row instead of text.')
  flags.DEFINE_string(
    'workdir', None, 'Run directory holding (or receiving) the tokenizer; default: a temporary one.'
  )
  flags.DEFINE_enum('split', 'train', ['train', 'eval'], 'Which split to show.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  f = flags.FLAGS
  if f.workdir:
    lines = show(f.config, f.workdir, f.num_examples, f.json, f.split)
  else:
    with tempfile.TemporaryDirectory() as workdir:
      lines = show(f.config, workdir, f.num_examples, f.json, f.split)
  print('\n'.join(lines))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
